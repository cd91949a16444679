"""Clean a JSONL file in one streaming pass: drop empty rows, rename fields, limit length, dedup, sample, split.

Memory stays flat whatever the input size: each line is parsed once and dropped, dedup keeps 16-byte digests rather
than rows, and sampling holds only the N reservoir rows as (line number, line bytes). Outputs are temporary siblings
renamed into place after the last line, so a bad line stops the run with nothing half-written.

Per row, in order: parse, check the named fields exist, drop empty, character limit, token limit, dedup, sample.
Rename and the train/validation split apply to the rows written; every field name given refers to the input.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from hashlib import blake2b
from operator import itemgetter
from pathlib import Path

import orjson

from llf_recipes.atomic import open_atomic
from llf_recipes.data.rows import line_problem
from llf_recipes.errors import LlfError

ONE_OBJECT_PER_LINE = "check the path; a JSONL file has one JSON object per line"
PROGRESS_MIN_BYTES = 32 << 20  # smaller inputs finish in well under a second: a bar would only flicker
_JSON_KIND = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


@dataclass
class CleanOptions:
    input: Path
    output: Path
    fields: tuple[str, ...] = ()  # the text fields; empty: every string field of each row
    rename: dict[str, str] = field(default_factory=dict)
    drop_empty: bool = False
    max_chars: int | None = None
    max_tokens: int | None = None
    tokenizer: Path | None = None
    dedup: bool = False
    sample: int | None = None
    seed: int = 0
    val_ratio: float | None = None
    val_out: Path | None = None
    group_by: str | None = None
    skip_bad: bool = False
    stats: bool = False
    progress: bool = False

    @property
    def rejects(self) -> Path:
        name = self.output.name.removesuffix(".jsonl")
        return self.output.with_name(f"{name}.rejects.jsonl")


@dataclass
class CleanStats:
    read: int = 0
    dropped: Counter = field(default_factory=Counter)
    rejected: int = 0
    written: int = 0
    val_written: int = 0
    chars_min: int | None = None
    chars_max: int = 0
    chars_total: int = 0

    def add_chars(self, n: int) -> None:
        self.chars_min = n if self.chars_min is None or n < self.chars_min else self.chars_min
        self.chars_max = max(self.chars_max, n)
        self.chars_total += n

    @property
    def chars_mean(self) -> float:
        rows = self.written + self.val_written
        return self.chars_total / rows if rows else 0.0


class BadLine(Exception):
    """A line that cannot be cleaned: stops the run, or goes to the rejects file under --skip-bad."""

    def __init__(self, reason: str, field: str | None = None, fix: str | None = None):
        super().__init__(reason)
        self.reason, self.field, self.fix = reason, field, fix


def row_verdict(opts: CleanOptions, tokenizer=None):
    """A function of one parsed row: its drop reason (None: keep) and its characters over the text fields.

    It raises BadLine for a named field the row lacks. Built once as a closure over only the checks asked for: it runs
    on every row, so attribute look-ups and unused branches would cost more than the checks themselves.
    """
    fields = opts.fields
    if len(fields) > 1:
        get_values = itemgetter(*fields)
    elif fields:
        get_values = lambda row, name=fields[0]: (row[name],)  # itemgetter of one name returns no tuple
    else:
        get_values = lambda row: [v for v in row.values() if v.__class__ is str]
    named_by = {name: "--rename" for name in opts.rename}
    if opts.group_by and opts.val_ratio:
        named_by[opts.group_by] = "--group-by"
    required = tuple(name for name in named_by if name not in fields)
    named_by.update((name, "--fields") for name in fields)
    # A rename onto a name the row already has would silently lose one of the two values.
    collisions = frozenset(new for new in opts.rename.values() if new not in opts.rename)
    drop_empty, max_chars, max_tokens = opts.drop_empty, opts.max_chars, opts.max_tokens
    measure = drop_empty or max_chars is not None or opts.stats

    def missing(name: str) -> BadLine:
        fix = "every row needs the fields named by --fields, --rename and --group-by; check the spelling"
        if name in opts.rename.values():
            fix = f"{named_by.get(name, '--fields')} names the input's fields, before --rename: use the old name"
        return BadLine(f"field {name!r} (named by {named_by.get(name, '--fields')}) is missing", name, fix)

    def collision(row: dict) -> BadLine:
        old, new = next((old, new) for old, new in opts.rename.items() if new in collisions and new in row)
        return BadLine(f"--rename {old}={new} would overwrite the field {new!r} this row already has", new,
                       f"rename {new!r} too, or pick another name")

    def verdict(row: dict) -> tuple[str | None, int]:
        try:
            values = get_values(row)
        except KeyError as exc:
            raise missing(exc.args[0]) from None
        for name in required:
            if name not in row:
                raise missing(name)
        if collisions and not collisions.isdisjoint(row):
            raise collision(row)
        nchars = 0
        if measure:
            for v in values:
                if v.__class__ is str:
                    if drop_empty and (not v or v.isspace()):
                        return "empty", 0
                    nchars += len(v)
                elif drop_empty and (v is None or (not v and v.__class__ in (list, dict))):
                    return "empty", 0
            if max_chars is not None and nchars >= max_chars:
                return "max_chars", nchars
        if tokenizer is not None:
            texts = [v for v in values if v.__class__ is str]
            if texts and sum(map(len, tokenizer.encode_batch(texts, add_special_tokens=False))) >= max_tokens:
                return "max_tokens", nchars
        return None, nchars

    return verdict


class Reservoir:
    """A uniform sample of `size` items from a stream of unknown length (Li's Algorithm L).

    Random numbers are drawn only when an item enters, about size * log(n / size) times, so the caller's per-row cost
    is one integer comparison against `next_pick`.
    """

    def __init__(self, size: int, seed: int):
        self.size = size
        self.items: list = []
        self.next_pick = 0
        self._random = random.Random(seed).random
        self._w = 1.0

    def take(self, index: int, item) -> None:
        items, size, rand = self.items, self.size, self._random
        if len(items) < size:
            items.append(item)
            if len(items) < size:
                self.next_pick = index + 1
                return
        else:
            items[int(rand() * size)] = item  # randrange's exactness costs 4x here; the bias is ~size/2**53
        # 1 - rand() lies in (0, 1], where log() is defined
        self._w *= math.exp(math.log(1.0 - rand()) / size)
        # w rounds to 1.0 only when that draw was exactly 1.0: then the very next item enters
        skip = math.floor(math.log(1.0 - rand()) / math.log1p(-self._w)) if self._w < 1.0 else 0
        self.next_pick = index + 1 + skip


class Splitter:
    """Train or validation by a seeded hash of the row, or of its --group-by value so a group never straddles."""

    def __init__(self, ratio: float, seed: int, group_by: str | None):
        self._threshold = int(ratio * 2**64)
        self._salt = f"{seed}\0".encode()
        self._group_by = group_by

    def is_val(self, row: dict) -> bool:
        value = row[self._group_by] if self._group_by else row
        digest = blake2b(self._salt + orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=8).digest()
        return int.from_bytes(digest, "big") < self._threshold


class Writer:
    """Renames, splits and counts the rows written; rows left as they were are copied byte for byte."""

    def __init__(self, opts: CleanOptions, out, val, stats: CleanStats):
        self.out, self.val, self.stats = out, val, stats
        self.rename = opts.rename
        self.splitter = Splitter(opts.val_ratio, opts.seed, opts.group_by) if opts.val_ratio else None
        self.needs_row = bool(self.rename) or self.splitter is not None

    def write(self, row: dict | None, line: bytes, nchars: int) -> None:
        if self.rename:
            data = orjson.dumps({self.rename.get(k, k): v for k, v in row.items()}, option=orjson.OPT_APPEND_NEWLINE)
        else:
            data = line if line.endswith(b"\n") else line + b"\n"
        if self.splitter is not None and self.splitter.is_val(row):
            self.val.write(data)
            self.stats.val_written += 1
        else:
            self.out.write(data)
            self.stats.written += 1
        self.stats.add_chars(nchars)


def clean(opts: CleanOptions) -> CleanStats:
    size = _input_size(opts.input)
    tokenizer = load_tokenizer(opts.tokenizer) if opts.max_tokens is not None else None
    verdict = row_verdict(opts, tokenizer)
    stats = CleanStats()
    where = str(opts.input)
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    seen: set[bytes] | None = set() if opts.dedup else None
    reservoir = Reservoir(opts.sample, opts.seed) if opts.sample is not None else None
    kept = blank = lineno = 0
    with ExitStack() as stack:
        fh = stack.enter_context(open(opts.input, "rb", buffering=1 << 20))
        writer = Writer(opts, stack.enter_context(open_atomic(opts.output)),
                        stack.enter_context(open_atomic(opts.val_out)) if opts.val_out else None, stats)
        rejects = stack.enter_context(open_atomic(opts.rejects)) if opts.skip_bad else None
        lines = stack.enter_context(_progress(fh, size, opts.progress and size >= PROGRESS_MIN_BYTES, opts.input.name))
        for lineno, line in enumerate(lines, 1):
            try:
                row = loads(line)
                if row.__class__ is not dict:
                    raise BadLine(f"the line is {_JSON_KIND.get(row.__class__, 'null')}, not a JSON object",
                                  fix="each line must be one object, e.g. {\"prompt\": ..., \"response\": ...}")
                reason, nchars = verdict(row)
            except decode_error as exc:
                if line.isspace():
                    blank += 1
                    continue
                _reject(rejects, stats, where, lineno, line, _decode_problem(line, exc))
                continue
            except BadLine as bad:
                _reject(rejects, stats, where, lineno, line, bad)
                continue
            if reason is not None:
                stats.dropped[reason] += 1
                continue
            if seen is not None:
                digest = blake2b(orjson.dumps(row, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
                if digest in seen:
                    stats.dropped["duplicate"] += 1
                    continue
                seen.add(digest)
            if reservoir is None:
                writer.write(row, line, nchars)
            elif kept == reservoir.next_pick:
                reservoir.take(kept, (lineno, line, nchars))
            kept += 1
        stats.read = lineno - blank
        if not stats.read:
            raise LlfError("has no rows (only blank lines)", where=where, fix=ONE_OBJECT_PER_LINE)
        if reservoir is not None:
            stats.dropped["not_sampled"] = kept - len(reservoir.items)
            for _, line, nchars in sorted(reservoir.items, key=itemgetter(0)):
                writer.write(loads(line) if writer.needs_row else None, line, nchars)
    return stats


def load_tokenizer(path: Path | None):
    if path is None:
        raise LlfError("--max-tokens needs --tokenizer", key="--tokenizer", fix="--tokenizer path/to/tokenizer.json")
    try:
        from tokenizers import Tokenizer  # only --max-tokens pays for this import
    except ImportError:
        raise LlfError("--max-tokens needs the tokenizers package", key="--max-tokens",
                       fix="pip install tokenizers") from None
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise LlfError(f"{path} does not exist", key="--tokenizer",
                       fix="a Hugging Face tokenizer.json, or a model directory that holds one")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for files it cannot read
        raise LlfError(f"{path} is not a tokenizer.json the tokenizers library reads: {exc}", key="--tokenizer") from None


def _input_size(path: Path) -> int:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise LlfError(f"{path} does not exist", key="IN") from None
    if path.is_dir():
        raise LlfError(f"{path} is a directory", key="IN", fix="give one JSONL file")
    if size == 0:
        raise LlfError("the file is empty", where=str(path), fix=ONE_OBJECT_PER_LINE)
    return size


def _decode_problem(line: bytes, exc: orjson.JSONDecodeError) -> BadLine:
    reason, fix = line_problem(line, exc)
    return BadLine(reason, fix=fix)


def _reject(rejects, stats: CleanStats, where: str, lineno: int, line: bytes, bad: BadLine) -> None:
    if rejects is None:
        fix = f"{bad.fix}; or --skip-bad to set bad lines aside" if bad.fix else "fix the line, or --skip-bad to set it aside"
        raise LlfError(bad.reason, key=bad.field, where=f"{where}:{lineno}", fix=fix)
    record = {"line": lineno, "reason": bad.reason, "field": bad.field,
              "text": line.rstrip(b"\r\n").decode("utf-8", "backslashreplace")}
    rejects.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    stats.rejected += 1


@contextmanager
def _progress(fh, size: int, show: bool, name: str):
    """The file's lines, with a bar of bytes read on stderr when asked for (a terminal, a long input)."""
    if not show:
        yield fh
        return
    from rich.console import Console  # imported only when a bar is drawn: keeps plain runs small
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"cleaning {name}", total=size)

        def lines():
            for i, line in enumerate(fh):
                if not i & 0x1FFF:  # about every 10 MB of typical rows: updates cost nothing measurable
                    bar.update(task, completed=fh.tell())
                yield line

        yield lines()

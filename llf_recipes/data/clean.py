"""Clean a JSONL file in one streaming pass: drop empty rows, rename fields, limit length, dedup, sample, split.

Memory stays flat whatever the input size: each line is parsed at most once per pass and dropped, dedup keeps 16-byte
digests rather than rows, and sampling holds only the N sampled rows as (line number, line bytes). Outputs are
temporary siblings renamed into place after the last line, so a bad line stops the run with nothing half-written.

Per row, in order: parse, check the named fields exist, drop empty, character limit, token limit, dedup (whole row
or --dedup-on fields), near-dedup (see neardup.py), sample.
Rename and the train/validation split apply to the rows written; every field name given refers to the input.

A sample decides which lines it could pick before parsing them (Sample). With --sample and none of --dedup, --stats or
--skip-bad, only those lines are parsed, about 1.5 N when most rows pass (N ln(rows / N) more in a second pass when
fewer than two thirds do); the others are passed over as bytes, so a bad line among them is not reported. The rows
picked are the same as when every line is parsed (same seed, same rows), and the run's summary says how many lines were
parsed. --stats, --skip-bad, --dedup, --dedup-on and --near-dedup need every line, so they parse and check them all.
"""

from __future__ import annotations

import math
import random
import sys
from collections import Counter, deque
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from heapq import heapify, heapreplace
from itertools import islice
from operator import itemgetter
from pathlib import Path

import orjson

from llf_recipes.atomic import open_together
from llf_recipes.data.rows import line_problem, open_as_lines
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
    token_stats: bool = False  # count the tokens of each row written (its text fields) with the tokenizer
    dedup: bool = False
    dedup_on: tuple[str, ...] = ()  # exact dedup on these fields' values rather than the whole row
    near_dedup: float | None = None  # drop rows this similar (MinHash estimate of Jaccard) to a row kept before
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

    @property
    def parses_every_line(self) -> bool:
        """False for a sample that may pass over lines it cannot pick; these options need every line seen."""
        return self.sample is None or self.deduplicates or self.stats or self.skip_bad

    @property
    def deduplicates(self) -> bool:
        return self.dedup or bool(self.dedup_on) or self.near_dedup is not None


@dataclass
class CleanStats:
    lines: int = 0
    parsed: int = 0  # lines that were rows and went through the checks
    read: int | None = None  # rows in the input; None when only the lines a sample could pick were parsed
    dropped: Counter = field(default_factory=Counter)  # complete only when read is not None
    rejected: int = 0
    written: int = 0
    val_written: int = 0
    chars_min: int | None = None
    chars_max: int = 0
    chars_total: int = 0
    near: object = None  # the NearDuplicates of --near-dedup: clusters and examples
    tokens: list | None = None  # --token-stats: tokens per row written, in writing order

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


def line_checker(opts: CleanOptions, tokenizer=None):
    """A function of one line: None for a blank line, else (row, drop reason or None, characters over the text fields).

    It raises BadLine for a line that is not a JSON object or lacks a named field. Built once as a closure over only the
    checks asked for: it runs on every line parsed, so attribute look-ups and unused branches would cost more than the
    checks themselves.
    """
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
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
    named_by.update((name, "--dedup-on") for name in opts.dedup_on)
    required = tuple(name for name in named_by if name not in fields)
    named_by.update((name, "--fields") for name in fields)
    # A rename onto a name the row already has would silently lose one of the two values.
    collisions = frozenset(new for new in opts.rename.values() if new not in opts.rename)
    drop_empty, max_chars, max_tokens = opts.drop_empty, opts.max_chars, opts.max_tokens
    measure = drop_empty or max_chars is not None or opts.stats

    def missing(name: str) -> BadLine:
        fix = "every row needs the fields named by --fields, --rename, --group-by and --dedup-on; check the spelling"
        if name in opts.rename.values():
            fix = f"{named_by.get(name, '--fields')} names the input's fields, before --rename: use the old name"
        return BadLine(f"field {name!r} (named by {named_by.get(name, '--fields')}) is missing", name, fix)

    def collision(row: dict) -> BadLine:
        old, new = next((old, new) for old, new in opts.rename.items() if new in collisions and new in row)
        return BadLine(f"--rename {old}={new} would overwrite the field {new!r} this row already has", new,
                       f"rename {new!r} too, or pick another name")

    def check(line: bytes) -> tuple[dict, str | None, int] | None:
        try:
            row = loads(line)
        except decode_error as exc:
            if line.isspace():
                return None
            reason, fix = line_problem(line, exc)
            raise BadLine(reason, fix=fix) from None
        if row.__class__ is not dict:
            raise BadLine(f"the line is {_JSON_KIND.get(row.__class__, 'null')}, not a JSON object",
                          fix="each line must be one object, e.g. {\"prompt\": ..., \"response\": ...}")
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
                        return row, "empty", 0
                    nchars += len(v)
                elif drop_empty and (v is None or (not v and v.__class__ in (list, dict))):
                    return row, "empty", 0
            if max_chars is not None and nchars >= max_chars:
                return row, "max_chars", nchars
        if tokenizer is not None and max_tokens is not None:
            texts = [v for v in values if v.__class__ is str]
            if texts and sum(map(len, tokenizer.encode_batch(texts, add_special_tokens=False))) >= max_tokens:
                return row, "max_tokens", nchars
        return row, None, nchars

    return check


class Sample:
    """A uniform random sample of `size` rows that says, before a line is parsed, whether that line can enter.

    Every line has a uniform random key, and the sample is the `size` rows with the smallest keys among the rows that
    pass the filters (bottom-k sampling). Only a line whose key is below the threshold can enter: `cap` at first, and
    the largest key held once `size` rows are held. The number of lines before the next such line is geometric in the
    threshold and that line's key is uniform below it, so keys are drawn only for the lines that can enter
    (`next_line`) and the lines in between need not be parsed. Keys do not depend on what a line holds, so whichever
    rows pass, the sample is uniform among them, and it is the same whether the other lines are parsed or not.

    With cap 1 about size * (1 + ln(lines / size)) lines are looked at; a cap near size / lines cuts that to about
    cap * lines, but when fewer than `size` rows pass among them, the sample is short (see `clean`: a second pass
    takes the rest).
    """

    def __init__(self, size: int, seed: int | str, cap: float = 1.0):
        self.size, self.cap = size, cap
        self.held: list[tuple[float, int, object]] = []  # (-key, line number, item), a max-heap by key when full
        self.next_line = 0
        self._random = random.Random(seed).random
        self._threshold = cap
        self.offer(0, None)  # schedules the first line

    @property
    def short(self) -> bool:
        """Fewer rows held than asked for although lines above the cap were never looked at."""
        return len(self.held) < self.size and self.cap < 1.0

    def offer(self, lineno: int, item) -> None:
        """Line `lineno`, which must be `next_line`: `item` to hold for a row that passed, None for any other line."""
        if item is not None:
            held = self.held
            if len(held) < self.size:
                held.append((-self._key, lineno, item))  # a heap only once full: what matters is the largest key
                if len(held) == self.size:
                    heapify(held)
                    self._threshold = -held[0][0]
            else:
                heapreplace(held, (-self._key, lineno, item))  # the key is below the threshold: the largest leaves
                self._threshold = -held[0][0]
        rand, threshold = self._random, self._threshold
        if threshold >= 1.0:
            self.next_line, self._key = lineno + 1, rand()
            return
        # 1 - rand() lies in (0, 1], where log() is defined; a threshold of exactly 0 admits no further line
        gap = math.log(1.0 - rand()) / math.log1p(-threshold) if threshold > 0.0 else math.inf
        self.next_line = lineno + 1 + int(min(gap, sys.maxsize // 2))
        self._key = threshold * rand()


def first_cap(head: bytes, size: int, rows: int) -> float:
    """A cap (see Sample) for `rows` out of a file of `size` bytes that starts with `head`: enough when two thirds of
    the lines pass. Any cap gives a uniform sample; the cap sets how many lines are parsed, and which rows a seed picks.
    """
    lines = max(1.0, size * max(head.count(b"\n"), 1) / max(len(head), 1))
    return min(1.0, 1.5 * (rows + 4 * math.sqrt(rows)) / lines)


class Splitter:
    """Train or validation by a seeded hash of the row, or of its --group-by value so a group never straddles."""

    def __init__(self, ratio: float, seed: int, group_by: str | None):
        from hashlib import blake2b

        self._blake2b = blake2b
        self._threshold = int(ratio * 2**64)
        self._salt = f"{seed}\0".encode()
        self._group_by = group_by

    def is_val(self, row: dict) -> bool:
        value = row[self._group_by] if self._group_by else row
        digest = self._blake2b(self._salt + orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=8).digest()
        return int.from_bytes(digest, "big") < self._threshold


class Writer:
    """Renames, splits and counts the rows written; rows left as they were are copied byte for byte."""

    def __init__(self, opts: CleanOptions, out, val, stats: CleanStats, tokenizer=None):
        self.out, self.val, self.stats = out, val, stats
        self.rename = opts.rename
        self.splitter = Splitter(opts.val_ratio, opts.seed, opts.group_by) if opts.val_ratio else None
        self.fields = opts.fields
        self.tokenizer = tokenizer if opts.token_stats else None
        if self.tokenizer is not None:
            from array import array

            stats.tokens = array("I")
        self.needs_row = bool(self.rename) or self.splitter is not None or self.tokenizer is not None

    def count_tokens(self, row: dict) -> None:
        values = [row.get(name) for name in self.fields] if self.fields else row.values()
        texts = [v for v in values if v.__class__ is str]
        encoded = self.tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []
        self.stats.tokens.append(sum(len(e) for e in encoded))

    def write(self, row: dict | None, line: bytes, nchars: int) -> None:
        if self.tokenizer is not None:
            self.count_tokens(row)
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
    """Clean opts.input into opts.output (and opts.val_out, opts.rejects); see the module's docstring.

    A sample takes one pass with the lines below a cap (first_cap), and when fewer rows than asked for pass among
    those, a second pass draws the rest uniformly from the other lines: together, the bottom keys of every row that
    passes. Both passes run whether or not every line is parsed, so --stats does not change the rows picked.
    """
    size = _input_size(opts.input)
    needs_tokenizer = opts.max_tokens is not None or opts.token_stats
    tokenizer = load_tokenizer(opts.tokenizer) if needs_tokenizer else None
    stats = CleanStats()
    every_line = opts.parses_every_line
    show = opts.progress and size >= PROGRESS_MIN_BYTES
    with ExitStack() as stack:
        fh, size = open_as_lines(opts.input, size)  # a JSON array file is read as its rows, one per line
        stack.enter_context(fh)
        # train, validation and rejects appear together; a rejects file of an earlier run goes in the same commit
        out, val, rejects = stack.enter_context(open_together(
            [opts.output, opts.val_out, opts.rejects if opts.skip_bad else None],
            remove=[] if opts.skip_bad else [opts.rejects]))
        writer = Writer(opts, out, val, stats, tokenizer)
        reader = _Reader(str(opts.input), line_checker(opts, tokenizer), writer)
        sample = Sample(opts.sample, opts.seed, first_cap(fh.peek(1 << 20), size, opts.sample)) if opts.sample else None
        with _progress(fh, size, show, opts.input.name) as lines:
            if every_line:
                kept = reader.every_line(lines, sample, rejects, stats, opts)
                stats.read = stats.parsed + stats.rejected
            else:
                reader.sampled_lines(lines, sample, stats)
        held = sample.held if sample is not None else []
        if sample is not None and sample.short:
            rest = Sample(sample.size - len(held), f"{opts.seed}/rest")
            taken = frozenset(lineno for _, lineno, _ in held)
            fh.seek(0)
            with _progress(fh, size, show, opts.input.name) as lines:
                if opts.deduplicates:  # whether a row is a duplicate depends on every row before it
                    reader.every_line(lines, rest, _Nowhere() if rejects else None, CleanStats(), opts, taken)
                else:
                    reader.sampled_lines(lines, rest, CleanStats() if every_line else stats, taken, opts.skip_bad)
            held = held + rest.held
        # Without a sample every line was parsed; a short first pass is followed by one that parses lines until
        # enough rows pass, and so finds a row if there is any.
        if not stats.parsed and not stats.rejected:
            raise LlfError("has no rows (only blank lines)", where=reader.where, fix=ONE_OBJECT_PER_LINE)
        # a sample holds lines, not rows: parsed, CJK rows take more memory than their UTF-8 lines
        loads = orjson.loads
        for _, _, (line, nchars) in sorted(held, key=itemgetter(1)):
            writer.write(loads(line) if writer.needs_row else None, line, nchars)
        if every_line and sample is not None:
            stats.dropped["not_sampled"] = kept - len(held)
    return stats


@dataclass
class _Reader:
    """One pass over the lines: `where` names the file in messages, `check` is line_checker's, and rows that pass
    go to `writer`, or to a sample as (line, characters)."""

    where: str
    check: Callable
    writer: Writer

    def every_line(self, lines, sample: Sample | None, rejects, stats: CleanStats, opts: CleanOptions,
                   taken: frozenset = frozenset()) -> int:
        """Parse and check every line: rows that pass are written, or offered to the sample when it picks their line
        (unless `taken`). Returns how many rows passed."""
        where, check, write, dropped = self.where, self.check, self.writer.write, stats.dropped
        exact = opts.dedup or bool(opts.dedup_on)
        seen: set[bytes] | None = set() if exact else None
        if exact:
            from hashlib import blake2b  # only --dedup and --val-ratio pay for loading OpenSSL
        dedup_on = opts.dedup_on
        key_of = itemgetter(*dedup_on) if len(dedup_on) > 1 else (lambda row: row[dedup_on[0]]) if dedup_on else None
        near = None
        if opts.near_dedup is not None:
            from llf_recipes.data.neardup import NearDuplicates

            near = stats.near = NearDuplicates(opts.near_dedup, opts.fields)
        next_line = sample.next_line if sample is not None else 0
        lineno = kept = parsed = 0
        for lineno, line in enumerate(lines, 1):
            try:
                checked = check(line)
            except BadLine as bad:
                _reject(rejects, stats, where, lineno, line, bad)
                checked = None
            if checked is not None:
                row, reason, nchars = checked
                parsed += 1
                if reason is None and seen is not None:
                    key = key_of(row) if key_of else row
                    digest = blake2b(orjson.dumps(key, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
                    if digest in seen:
                        reason = "duplicate"
                    else:
                        seen.add(digest)
                if reason is None and near is not None and near.is_duplicate(lineno, row):
                    reason = "near_duplicate"
                if reason is not None:
                    dropped[reason] += 1
                else:
                    kept += 1
                    if sample is None:
                        write(row, line, nchars)
            if lineno == next_line:
                passed = checked is not None and reason is None and lineno not in taken
                sample.offer(lineno, (line, nchars) if passed else None)
                next_line = sample.next_line
        stats.lines, stats.parsed = lineno, parsed
        return kept

    def sampled_lines(self, lines, sample: Sample, stats: CleanStats, taken: frozenset = frozenset(),
                      skip_bad: bool = False) -> None:
        """Parse and check only the lines the sample picks (except `taken` ones), and the first line so that a file
        that is not JSONL at all stops the run; pass over the others as bytes. A bad line stops the run, or under
        `skip_bad` (set aside by an earlier pass) counts as no row."""
        where, check, dropped, offer = self.where, self.check, stats.dropped, sample.offer
        numbered = enumerate(lines, 1)
        lineno = 0
        if sample.next_line > 1 and not skip_bad and (first := next(numbered, None)) is not None:
            lineno = 1
            try:
                checked = check(first[1])
            except BadLine as bad:
                raise _stop(where, lineno, bad) from None
            stats.parsed += checked is not None
        while True:
            gap = sample.next_line - lineno - 1
            if gap:
                passed = deque(islice(numbered, gap), maxlen=1)  # C speed: no Python bytecode per line passed over
                if passed:
                    lineno = passed[0][0]
            picked = next(numbered, None)
            if picked is None:
                break
            lineno, line = picked
            if lineno in taken:
                offer(lineno, None)
                continue
            try:
                checked = check(line)
            except BadLine as bad:
                if not skip_bad:
                    raise _stop(where, lineno, bad) from None
                checked = None
            if checked is None:
                offer(lineno, None)
                continue
            stats.parsed += 1
            _, reason, nchars = checked
            if reason is None:
                offer(lineno, (line, nchars))
            else:
                dropped[reason] += 1
                offer(lineno, None)
        stats.lines = max(stats.lines, lineno)


class _Nowhere:
    """A rejects file for a second pass: its bad lines were set aside by the first."""

    def write(self, data: bytes) -> None:
        pass


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
        size = path.stat().st_size
    except FileNotFoundError:
        raise LlfError(f"{path} does not exist", key="IN") from None
    if path.is_dir():
        raise LlfError(f"{path} is a directory", key="IN", fix="give one JSONL file")
    if size == 0:
        raise LlfError("the file is empty", where=str(path), fix=ONE_OBJECT_PER_LINE)
    return size


def _stop(where: str, lineno: int, bad: BadLine) -> LlfError:
    fix = f"{bad.fix}; or --skip-bad to set bad lines aside" if bad.fix else "fix the line, or --skip-bad to set it aside"
    return LlfError(bad.reason, key=bad.field, where=f"{where}:{lineno}", fix=fix)


def _reject(rejects, stats: CleanStats, where: str, lineno: int, line: bytes, bad: BadLine) -> None:
    if rejects is None:
        raise _stop(where, lineno, bad)
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

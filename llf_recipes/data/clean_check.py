"""What `clean` checks on each line: the options, the per-line checker, the counts, the tokenizer it may load."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import orjson

from llf_recipes.data.rows import line_problem
from llf_recipes.errors import LlfError

ONE_OBJECT_PER_LINE = "check the path; a JSONL file has one JSON object per line"
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

    def add_many(self, counts) -> None:
        """add_chars for each of `counts` (an iterable of characters per row written)."""
        counts = list(counts)
        if counts:
            low = min(counts)
            self.chars_min = low if self.chars_min is None or low < self.chars_min else self.chars_min
            self.chars_max = max(self.chars_max, max(counts))
            self.chars_total += sum(counts)

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




def digester(opts: CleanOptions):
    """None without exact dedup, else a function of a row: the 16-byte digest that --dedup (the whole row, keys
    sorted) or --dedup-on (those fields' values) compares."""
    if not (opts.dedup or opts.dedup_on):
        return None
    from hashlib import blake2b  # only --dedup and --val-ratio pay for loading OpenSSL

    dumps, sort_keys, dedup_on = orjson.dumps, orjson.OPT_SORT_KEYS, opts.dedup_on
    if not dedup_on:
        return lambda row: blake2b(dumps(row, option=sort_keys), digest_size=16).digest()
    key_of = itemgetter(*dedup_on) if len(dedup_on) > 1 else itemgetter(dedup_on[0])
    return lambda row: blake2b(dumps(key_of(row), option=sort_keys), digest_size=16).digest()

"""What `clean` is asked to do and what it counts, and the tokenizer it may load (the line checks: clean_lines.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from llf_recipes.errors import LlfError

FIRST_ROWS = 1000  # the lines whose rows a named field must appear among, and whose rows --drop-empty's note describes
ONE_OBJECT_PER_LINE = "check the path; a JSONL file has one JSON object per line"


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
    numbered: str = "line"  # what the numbers in messages count: "row" for a JSON array file (read as its rows)
    first_rows: int = 0  # rows among the first FIRST_ROWS lines that first_rows() looked at
    empty_fields: Counter = field(default_factory=Counter)  # --drop-empty without --fields: among those rows, how
    # many had each string field empty (what made them "empty")
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


def load_tokenizer(path: Path | None):
    if path is None:
        raise LlfError("--max-tokens needs --tokenizer", key="--tokenizer", fix="--tokenizer path/to/tokenizer.json")
    try:
        from tokenizers import Tokenizer  # only --max-tokens and --token-stats pay for this import
    except ImportError:
        raise LlfError("--max-tokens and --token-stats need the tokenizers package", key="--max-tokens",
                       fix="pip install tokenizers") from None
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise LlfError(f"{path} does not exist", key="--tokenizer",
                       fix="a Hugging Face tokenizer.json, or a model directory that holds one")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for files it cannot read
        raise LlfError(f"{path} is not a tokenizer.json the tokenizers library reads: {exc}", key="--tokenizer") from None




def named_fields(opts: CleanOptions) -> dict[str, str]:
    """{field: the option naming it} for the fields every row must have."""
    named = {name: "--rename" for name in opts.rename}
    if opts.group_by and opts.val_ratio:
        named[opts.group_by] = "--group-by"
    named.update((name, "--dedup-on") for name in opts.dedup_on)
    named.update((name, "--fields") for name in opts.fields)
    return named


def first_rows(fh, opts: CleanOptions, stats: CleanStats, where: str) -> None:
    """Look at the rows among the first FIRST_ROWS lines of `fh` (then rewound) before the pass.

    A field named by --fields, --rename, --dedup-on or --group-by that none of them has is a misspelling rather than
    bad rows: it stops the run before anything is written, --skip-bad or not (which would otherwise set every row
    aside and write an empty file). In a large file only these first rows count: a field every row needs that is
    absent from the first thousand would make at least that many rows bad anyway. Lines that are not JSON objects
    are passed over here (they count among the FIRST_ROWS lines, so a file that is not JSONL is not read to its end);
    the pass itself reports them.
    With --drop-empty and no --fields, counts which string fields are empty in those rows (stats.empty_fields).
    """
    import orjson

    named = named_fields(opts)
    census = opts.drop_empty and not opts.fields
    if not named and not census:
        return
    seen: set[str] = set()
    rows = 0
    ended = True
    for lines, line in enumerate(fh, 1):
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            row = None
        if row.__class__ is dict:
            rows += 1
            seen.update(row)
            if census:
                stats.empty_fields.update(k for k, v in row.items() if v.__class__ is str and (not v or v.isspace()))
            if not census and seen.issuperset(named):
                break
        if lines >= FIRST_ROWS:
            ended = not fh.peek(1)
            break
    fh.seek(0)
    stats.first_rows = rows
    absent = [name for name in named if name not in seen]
    if not rows or not absent:
        return
    name = absent[0]
    option = named[name]
    rows_text = "no row of the file has it" if ended else f"none of the first {rows} rows has it"
    if name in opts.rename.values():
        fix = f"{option} names the input's fields, before --rename: use the old name"
    else:
        from llf_recipes.suggest import nearest

        guess = nearest(name, sorted(seen))
        fix = (f"did you mean {guess!r}? " if guess else "") + f"the rows have {', '.join(sorted(seen)[:12])}"
    raise LlfError(f"{option} names the field {name!r}, but {rows_text}", where=where, key=option, fix=fix)

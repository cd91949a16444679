"""Stream rows out of json / jsonl / parquet / csv files, with the file and line of each row for error messages."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from llf_recipes.errors import LlfError

FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "tsv"}


class BadRow(LlfError):
    """A row that cannot be used: `where` is file:line, `key` the field."""

    def __init__(self, message: str, *, where: str, key: str | None = None, raw: bytes | str | None = None):
        super().__init__(message, where=where, key=key, fix="fix the row, or pass --skip-bad to set such rows aside")
        self.raw = raw


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise LlfError(f"{path}: unknown file type {path.suffix!r}", fix=f"use one of {', '.join(FORMATS)}")
    return fmt


BOM = b"\xef\xbb\xbf"


def line_problem(raw: bytes, exc: orjson.JSONDecodeError) -> tuple[str, str | None]:
    """Why a line failed to parse, and how to fix it: a byte-order mark, invalid UTF-8, or the JSON error."""
    if raw.startswith(BOM):
        return ("the line starts with a UTF-8 byte order mark (BOM)",
                "save the file as UTF-8 without a BOM, e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' FILE")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return (f"invalid UTF-8 at byte {bad.start + 1} of the line",
                "convert the file to UTF-8, e.g. iconv -f GB18030 -t UTF-8 FILE")
    return f"invalid JSON at column {exc.colno}: {exc.msg}", None


def _decode(raw: bytes, where: str) -> dict[str, Any]:
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRow(line_problem(raw, exc)[0], where=where, raw=raw) from None
    if not isinstance(row, dict):
        raise BadRow(f"expected a JSON object, got {type(row).__name__}", where=where, raw=raw)
    return row


def iter_rows(path: str | Path, skip_bad: list | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (where, row). Bad rows raise BadRow, or are appended to `skip_bad` when it is a list."""
    path = Path(path)
    if not path.is_file():
        raise LlfError(f"{path} does not exist")
    fmt = file_format(path)
    if path.stat().st_size == 0:
        raise LlfError(f"{path} is empty", where=str(path))
    with open(path, "rb") as fh:
        head = fh.read(3)
    if head == BOM:
        raise LlfError("starts with a UTF-8 byte-order mark", where=f"{path}:1", fix="save it as UTF-8 without BOM")
    if fmt == "jsonl":
        yield from _jsonl(path, skip_bad)
    elif fmt == "json":
        yield from _json_array(path, skip_bad)
    elif fmt == "parquet":
        yield from _parquet(path)
    else:
        yield from _csv(path, "\t" if fmt == "tsv" else ",")


def _jsonl(path: Path, skip_bad: list | None) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, _decode(raw, where)
            except BadRow as bad:
                if skip_bad is None:
                    raise
                skip_bad.append(bad)


def _json_array(path: Path, skip_bad: list | None) -> Iterator[tuple[str, dict[str, Any]]]:
    # A JSON array has to be parsed whole; rows are numbered by position ([i]) since lines mean little there.
    raw = path.read_bytes()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        line = raw[: exc.pos].count(b"\n") + 1
        raise LlfError(f"invalid JSON: {exc.msg}", where=f"{path}:{line}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise LlfError("a .json data file must hold an array of objects", where=str(path))
    for i, row in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(row, dict):
            bad = BadRow(f"expected a JSON object, got {type(row).__name__}", where=where, raw=orjson.dumps(row))
            if skip_bad is None:
                raise bad
            skip_bad.append(bad)
            continue
        yield where, row


def _parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LlfError("reading parquet needs pyarrow", fix="pip install pyarrow (it comes with the train extra)") from None
    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            index += 1
            yield f"{path}#row{index}", row


def _csv(path: Path, delimiter: str) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        try:
            for row in reader:
                yield f"{path}:{reader.line_num}", row
        except UnicodeDecodeError as exc:
            raise LlfError(f"invalid UTF-8 near byte {exc.start}", where=str(path)) from None


def dumps(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row) + b"\n"


def reject_line(bad: BadRow) -> bytes:
    raw = bad.raw.decode("utf-8", "replace") if isinstance(bad.raw, bytes) else bad.raw
    return orjson.dumps({"where": bad.where, "field": bad.key, "reason": bad.message, "row": raw}) + b"\n"



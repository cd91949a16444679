"""Stream rows out of every file type LLaMA-Factory reads (json, jsonl, parquet, csv, arrow, txt, a folder of one
type), with the file and line of each row for error messages."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from llf_recipes.errors import LlfError

FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".arrow": "arrow",
           ".txt": "text"}


class BadRow(LlfError):
    """A row that cannot be used: `where` is file:line, `key` the field."""

    def __init__(self, message: str, *, where: str, key: str | None = None, raw: bytes | str | None = None,
                 fix: str = "fix the row, or pass --skip-bad to set such rows aside"):
        super().__init__(message, where=where, key=key, fix=fix)
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
    text = raw.decode("utf-8").rstrip("\r\n")
    if exc.lineno > 1 or exc.pos >= len(text):  # past the line's last character: the line stops early
        return f"invalid JSON at the end of the line (column {len(text) + 1}; is it cut short?): {exc.msg}", None
    return f"invalid JSON at column {exc.colno}: {exc.msg}", None


def _decode(raw: bytes, where: str) -> dict[str, Any]:
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRow(line_problem(raw, exc)[0], where=where, raw=raw) from None
    if not isinstance(row, dict):
        raise BadRow(f"expected a JSON object, got {type(row).__name__}", where=where, raw=raw)
    return row


def folder_files(path: Path) -> list[Path]:
    """The files of a data folder, as LLaMA-Factory reads it: every entry, all of one known type."""
    files = sorted(p for p in path.iterdir())
    if not files:
        raise LlfError(f"{path} is an empty folder", where=str(path))
    kinds = {p.suffix.lower() for p in files}
    if any(p.is_dir() for p in files) or len(kinds) != 1 or files[0].suffix.lower() not in FORMATS:
        raise LlfError(f"a data folder must hold files of one type ({', '.join(FORMATS)}); found "
                       f"{', '.join(sorted(k or '(no extension)' for k in kinds))}", where=str(path),
                       fix="move other files out of the folder")
    return files


def iter_rows(path: str | Path, skip_bad: list | None = None, *, csv_empty_none: bool = False
              ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (where, row). Bad rows raise BadRow, or are appended to `skip_bad` when it is a list.

    A folder yields the rows of each of its files in name order. `csv_empty_none` reads empty CSV cells as missing, as
    LLaMA-Factory's loader (pandas) does."""
    path = Path(path)
    if path.is_dir():
        for one in folder_files(path):
            yield from iter_rows(one, skip_bad, csv_empty_none=csv_empty_none)
        return
    if not path.is_file():
        raise LlfError(f"{path} does not exist")
    fmt = file_format(path)
    if path.stat().st_size == 0:
        raise LlfError(f"{path} is empty", where=str(path))
    with open(path, "rb") as fh:
        head = fh.read(3)
    if head == BOM:
        raise LlfError("starts with a UTF-8 byte-order mark", where=f"{path}:1", fix="save it as UTF-8 without BOM")
    if fmt in ("json", "jsonl"):
        yield from (_json_array(path, skip_bad) if _first_byte(path) == b"[" else _jsonl(path, skip_bad))
    elif fmt == "parquet":
        yield from _arrow_rows(path, _parquet_batches)
    elif fmt == "arrow":
        yield from _arrow_rows(path, _ipc_batches)
    elif fmt == "text":
        yield from _text(path)
    else:
        yield from _csv(path, "\t" if fmt == "tsv" else ",", csv_empty_none)


def _first_byte(path: Path) -> bytes:
    with open(path, "rb") as fh:
        while chunk := fh.read(4096):
            stripped = chunk.lstrip()
            if stripped:
                return stripped[:1]
    return b""


def _jsonl(path: Path, skip_bad: list | None) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, _decode(raw, where)
            except BadRow as bad:
                if lineno == 1:
                    _single_object(path)
                if skip_bad is None:
                    raise
                skip_bad.append(bad)


def _single_object(path: Path) -> None:
    """A file whose first line does not parse may be one pretty-printed object, which LLaMA-Factory cannot read."""
    if path.stat().st_size > 64 << 20:
        return
    try:
        whole = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return
    if isinstance(whole, dict):
        raise LlfError("holds a single JSON object; LLaMA-Factory reads an array of objects or one object per line",
                       where=str(path), fix="wrap the rows in [ ... ], or write one object per line")


def _json_array(path: Path, skip_bad: list | None) -> Iterator[tuple[str, dict[str, Any]]]:
    # A JSON array has to be parsed whole; each row is named by its position ([i]) and the line it starts on.
    raw = path.read_bytes()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            line = raw[: bad.start].count(b"\n") + 1
            raise LlfError(f"invalid UTF-8 at byte {bad.start}", where=f"{path}:{line}",
                           fix="convert the file to UTF-8, e.g. iconv -f GB18030 -t UTF-8 FILE") from None
        # exc.pos counts characters, not bytes: a file with CJK text would be named lines too early
        raise LlfError(f"invalid JSON: {exc.msg}", where=f"{path}:{exc.lineno}") from None
    if not isinstance(data, list):
        raise LlfError(f"a {path.suffix} data file must hold an array of objects or one object per line, not a single "
                       f"{type(data).__name__}", where=str(path), fix="wrap the rows in [ ... ], or write one per line")
    starts = _row_lines(raw) if len(raw) <= LINE_SCAN_MAX else None
    for i, row in enumerate(data):
        where = f"{path}:{starts[i]} (row {i + 1})" if starts and i < len(starts) else f"{path}[{i}]"
        if not isinstance(row, dict):
            bad = BadRow(f"expected a JSON object, got {type(row).__name__}", where=where, raw=orjson.dumps(row))
            if skip_bad is None:
                raise bad
            skip_bad.append(bad)
            continue
        yield where, row


_TOKENS = re.compile(rb'"[^"\\\n]*(?:\\.[^"\\\n]*)*"|[\[\]{}]|[^\s,\[\]{}"]+')
LINE_SCAN_MAX = 16 << 20  # bigger arrays name rows by position only: the scan costs about a second per 40 MB


def _row_lines(raw: bytes) -> list[int]:
    """The line each top-level element of a valid JSON array starts on. Strings are matched whole, so the scan
    visits tokens, not bytes; lines are counted between element starts (JSON strings hold no raw line breaks)."""
    starts: list[int] = []
    depth, line, last = 0, 1, 0
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if depth == 1 and token not in (b"]", b"}"):
            line += raw.count(b"\n", last, match.start())
            last = match.start()
            starts.append(line)
        if token in (b"[", b"{"):
            depth += 1
        elif token in (b"]", b"}"):
            depth -= 1
    return starts


def _parquet_batches(path: Path):
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).iter_batches(batch_size=4096)


def _ipc_batches(path: Path):
    import pyarrow as pa

    # LLaMA-Factory's loader (datasets' arrow builder) reads the stream format, else the file format.
    try:
        return iter(pa.ipc.open_stream(pa.memory_map(str(path))))
    except (OSError, pa.ArrowInvalid):
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        return (reader.get_batch(i) for i in range(reader.num_record_batches))


def _arrow_rows(path: Path, batches) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import pyarrow as pa
    except ImportError:
        raise LlfError(f"reading {path.suffix} files needs pyarrow", fix="pip install pyarrow (it comes with the train extra)") from None
    index = 0
    try:
        for batch in batches(path):
            for row in batch.to_pylist():
                index += 1
                yield f"{path}#row{index}", row
    except (pa.ArrowException, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LlfError(f"cannot read it as {path.suffix[1:]}: {first}", where=f"{path}#row{index + 1}" if index else str(path),
                       fix=f"check that the file is a complete {path.suffix[1:]} file (re-export or re-download it)") from None


def _text(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    # One row per line, empty lines included, as datasets' text builder reads it (universal newlines, no line ends).
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                yield f"{path}:{lineno}", {"text": line.rstrip("\n")}
    except UnicodeDecodeError:
        raise _bad_utf8(path) from None


def _bad_utf8(path: Path) -> LlfError:
    """Where the first byte that is not UTF-8 is, by line (a decoder's offset counts from its buffer, not the file)."""
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return LlfError(f"invalid UTF-8 at byte {exc.start + 1} of the line", where=f"{path}:{lineno}",
                                fix="convert the file to UTF-8, e.g. iconv -f GB18030 -t UTF-8 FILE")
    return LlfError("invalid UTF-8", where=str(path), fix="convert the file to UTF-8, e.g. iconv -f GB18030 -t UTF-8 FILE")


def _csv(path: Path, delimiter: str, empty_none: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    csv.field_size_limit(2**31 - 1)  # pandas, which LLaMA-Factory reads CSV with, has no field limit
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter, strict=True)
        start = 1
        try:
            for row in reader:
                if None in row:
                    raise LlfError(f"{len(row[None])} more field(s) than the header has", where=f"{path}:{reader.line_num}",
                                   fix="quote fields that hold the delimiter")
                yield f"{path}:{reader.line_num}", {k: (None if empty_none and v == "" else v) for k, v in row.items()}
                start = reader.line_num + 1
        except UnicodeDecodeError:
            raise _bad_utf8(path) from None
        except csv.Error as exc:
            raise LlfError(f"cannot read it as CSV: {exc}", where=f"{path}:{max(start, 2)}",
                           fix="close the quote (a field with quotes, commas or line breaks goes in \"...\")") from None


def open_as_lines(path: Path, size: int):
    """A binary file of JSON lines to stream: the file itself, or, for a file holding one JSON array, its elements
    one per line (numbered by position). -> (file, size in bytes)."""
    import io

    fh = open(path, "rb", buffering=1 << 20)  # noqa: SIM115 - the caller owns and closes it
    if fh.peek(256).lstrip()[:1] != b"[":
        return fh, size
    with fh:
        raw = fh.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        line = raw[: exc.pos].count(b"\n") + 1
        raise LlfError(f"invalid JSON: {exc.msg}", where=f"{path}:{line}",
                       fix="a JSON array of objects, or one JSON object per line") from None
    if not isinstance(data, list):
        return open(path, "rb", buffering=1 << 20), size
    lines = b"".join(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE) for row in data)
    return io.BufferedReader(io.BytesIO(lines)), len(lines)


def dumps(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row) + b"\n"


def reject_line(bad: BadRow) -> bytes:
    raw = bad.raw.decode("utf-8", "replace") if isinstance(bad.raw, bytes) else bad.raw
    return orjson.dumps({"where": bad.where, "field": bad.key, "reason": bad.message, "row": raw}) + b"\n"



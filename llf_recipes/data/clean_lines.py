"""Checking the lines of a JSONL file for `clean`: the per-line checker, the dedup digest, the bytes written for a row,
and a chunk of lines checked at once, in this process or in a worker process (`serve`).

This module imports little (orjson and the standard library's smallest parts): a worker process loads only it, so its
memory stays close to a bare interpreter's.
"""

from __future__ import annotations

import marshal
import os
import sys
from array import array
from io import BytesIO
from operator import itemgetter
from types import SimpleNamespace

import orjson

_JSON_KIND = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
# One code per line: what became of it
BLANK, PASSED, BAD, EMPTY, MAX_CHARS, DUPLICATE, PASSED_VAL = range(7)
_CODES = {None: PASSED, "empty": EMPTY, "max_chars": MAX_CHARS}
_CUT_STEP = 1 << 13
# The options line_checker, renderer and digester read: all a worker is sent of them
OPTIONS = ("fields", "rename", "group_by", "val_ratio", "seed", "dedup", "dedup_on", "drop_empty", "max_chars",
           "max_tokens", "stats")


class BadLine(Exception):
    """A line that cannot be cleaned: stops the run, or goes to the rejects file under --skip-bad."""

    def __init__(self, reason: str, field: str | None = None, fix: str | None = None):
        super().__init__(reason)
        self.reason, self.field, self.fix = reason, field, fix


def line_checker(opts, tokenizer=None):
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
            from llf_recipes.data.rows import line_problem  # only a bad line pays for importing the readers

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

    # what scan needs to check the common line inline (no call per line); None: every line goes through check
    check.plan = None if tokenizer is not None else (loads, decode_error, get_values, frozenset(required), collisions,
                                                     measure, drop_empty, max_chars)
    return check


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


def renderer(opts):
    """A function of (row, line ending in a newline): (the bytes written for it, whether they go to the validation
    file). Rows are written as they came unless renamed; the parsed row is needed only to rename or to split."""
    rename = opts.rename
    splitter = Splitter(opts.val_ratio, opts.seed, opts.group_by) if opts.val_ratio else None
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE

    def render(row: dict | None, line: bytes) -> tuple[bytes, bool]:
        data = dumps({rename.get(k, k): v for k, v in row.items()}, option=newline) if rename else line
        return data, splitter is not None and splitter.is_val(row)

    return render


def digester(opts):
    """None without exact dedup, else a function of a row: the 16-byte digest that --dedup (the whole row, keys
    sorted) or --dedup-on (those fields' values) compares. xxHash's XXH3-128 (the `data` extra) is five times faster
    than BLAKE2b on rows of a kilobyte; BLAKE2b stands in without it. Either way a collision among even a billion rows
    is about as likely as 1 in 10^20, and the rows kept are the same."""
    if not (opts.dedup or opts.dedup_on):
        return None
    try:
        from xxhash import xxh3_128_digest as digest
    except ImportError:
        from hashlib import blake2b

        def digest(data: bytes) -> bytes:
            return blake2b(data, digest_size=16).digest()

    dumps, sort_keys, dedup_on = orjson.dumps, orjson.OPT_SORT_KEYS, opts.dedup_on
    if not dedup_on:
        return lambda row: digest(dumps(row, option=sort_keys))
    key_of = itemgetter(*dedup_on) if len(dedup_on) > 1 else itemgetter(dedup_on[0])
    return lambda row: digest(dumps(key_of(row), option=sort_keys))


def _cut(fd: int, pos: int, size: int) -> int:
    """The first line start at or after byte `pos`."""
    if pos <= 0:
        return 0
    while pos < size:
        block = os.pread(fd, _CUT_STEP, pos - 1)
        found = block.find(b"\n")
        if found >= 0:
            return pos + found
        pos += len(block)
    return size


def scan(data: bytes, check, render, digest, offsets: bool) -> tuple:
    """Check the lines of `data` (whole lines; only the file's last may lack its newline) as `check` would one by one.

    -> (lines, codes, characters, line starts (or None), digests (or None), bytes to write (or None), bad lines).
    A line that is a JSON object with every named field, only strings among them and no --rename collision is checked
    here inline; any other line goes through `check` itself, so whatever is unusual gets the same verdict and message.
    The lines are iterated from a BytesIO, one alive at a time (bytes.split would hold them all: three times slower).
    """
    n = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    codes = bytearray(n)  # BLANK
    chars = array("I", bytes(4 * n))
    starts = array("Q", [0]) if offsets else None
    digests = [None] * n if digest is not None else None
    rows = [None] * n if render is not None else None
    bad = []
    plan = check.plan
    if plan is not None:
        loads, decode_error, get_values, required, collisions, measure, drop_empty, max_chars = plan
    end = 0
    for i, line in enumerate(BytesIO(data)):
        if starts is not None:
            end += len(line)
            starts.append(end)
        values = None
        if plan is not None:
            try:
                row = loads(line)
                if row.__class__ is dict:
                    values = get_values(row)
            except (decode_error, KeyError):
                pass
            if values is not None and ((required and not required.issubset(row))
                                       or (collisions and not collisions.isdisjoint(row))):
                values = None
        code, nchars = PASSED, 0
        if values is not None and measure:
            for v in values:
                if v.__class__ is not str:
                    values = None  # null, a number, a list...: as check decides
                    break
                if drop_empty and (not v or v.isspace()):
                    code, nchars = EMPTY, 0
                    break
                nchars += len(v)
            else:
                if max_chars is not None and nchars >= max_chars:
                    code = MAX_CHARS
        if values is None:
            try:
                checked = check(line)
            except BadLine as exc:
                codes[i] = BAD
                bad.append((i, exc.reason, exc.field, exc.fix, line))
                continue
            if checked is None:
                continue
            row, reason, nchars = checked
            code = _CODES[reason]
        codes[i], chars[i] = code, nchars
        if code != PASSED:
            continue
        if digests is not None:
            digests[i] = digest(row)
        if rows is not None:
            rows[i], to_val = render(row, line if line.endswith(b"\n") else line + b"\n")
            if to_val:
                codes[i] = PASSED_VAL
    return n, codes, chars, starts, digests, rows, bad


def chunk_scanner(fd: int, size: int, opts, with_sample: bool, chunk: int):
    """A function of a chunk's number k: (its byte offset, scan's result) for the lines starting in bytes
    [k * chunk, (k + 1) * chunk) of the file."""
    check = line_checker(opts)
    render = None if with_sample else renderer(opts)
    digest = digester(opts)

    def scan_chunk(k: int) -> tuple:
        lo, hi = _cut(fd, k * chunk, size), _cut(fd, (k + 1) * chunk, size)
        return lo, scan(os.pread(fd, hi - lo, lo) if hi > lo else b"", check, render, digest, with_sample)

    return scan_chunk


def send(out, value) -> None:
    """One value on a pipe: its length, then its marshal bytes (marshal: no import, and bytes, lists and tuples are
    all a chunk's result holds)."""
    data = marshal.dumps(value)
    out.write(len(data).to_bytes(8, "little"))
    out.write(data)
    out.flush()


def receive(fh):
    head = fh.read(8)
    if len(head) < 8:
        raise EOFError
    return marshal.loads(fh.read(int.from_bytes(head, "little")))


def serve() -> None:
    """A worker: the job comes on stdin (see send), then the numbers of the chunks to check, 8 bytes each; one result
    per chunk goes to stdout, in the order asked. It stops when stdin closes."""
    stdin, out = sys.stdin.buffer, sys.stdout.buffer
    path, options, size, with_sample, chunk = receive(stdin)
    with open(path, "rb", buffering=0) as fh:
        scan_chunk = chunk_scanner(fh.fileno(), size, SimpleNamespace(**options), with_sample, chunk)
        while len(asked := stdin.read(8)) == 8:
            lo, (n, codes, chars, starts, digests, rows, bad) = scan_chunk(int.from_bytes(asked, "little"))
            send(out, (lo, n, bytes(codes), chars.tobytes(), starts.tobytes() if starts is not None else None, digests,
                       rows, bad))

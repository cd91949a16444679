"""Checking the lines of a JSONL file for `clean`: the per-line checker, the dedup digest, the bytes written for a row,
and a chunk of lines checked at once, in this process or in a worker process (`serve`).

This module imports little (orjson and the standard library's smallest parts): a worker process loads only it, so its
memory stays close to a bare interpreter's (with numpy and neardup.py too in the first pass of --near-dedup).
"""

from __future__ import annotations

import marshal
import math
import os
import sys
from array import array
from functools import partial
from io import BytesIO
from itertools import accumulate, chain
from operator import itemgetter, not_
from operator import or_ as _or
from types import SimpleNamespace

import orjson

_JSON_KIND = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
# One code per line: what became of it
BLANK, PASSED, BAD, EMPTY, MAX_CHARS, DUPLICATE, PASSED_VAL, NEAR_DUPLICATE = range(8)
_CODES = {None: PASSED, "empty": EMPTY, "max_chars": MAX_CHARS}
_CUT_STEP = 1 << 13
_DICT_ONLY, _STR_ONLY = {dict}, frozenset((str,))
_OVER = bytes([PASSED, MAX_CHARS]) + bytes(254)  # bytes.translate: False -> PASSED, True -> MAX_CHARS
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


BATCH = 64  # lines checked together by _ordinary: few enough that their rows stay in the CPU's caches


def _ordinary(lines: list[bytes], plan) -> tuple | None:
    """(codes, characters, rows) of `lines` when every one is an ordinary row: a JSON object with every named field,
    only strings among them and no --rename collision; None when any is not. Checked with map() and other C-level
    loops: a Python loop per line and per value would cost as much as parsing the line."""
    loads, decode_error, get_values, required, collisions, measure, drop_empty, max_chars = plan
    try:
        rows = list(map(loads, lines))
        if {*map(type, rows)} != _DICT_ONLY:
            return None
        values = list(map(get_values, rows))
    except (decode_error, KeyError):
        return None
    if (required and not all(map(required.issubset, rows))) or \
            (collisions and not all(map(collisions.isdisjoint, rows))):
        return None
    flat = list(chain.from_iterable(values))
    if not {*map(type, flat)} <= _STR_ONLY:
        return None
    n = len(lines)
    if not measure:
        return bytes([PASSED]) * n, array("I", bytes(4 * n)), rows
    counted = list(map(sum, map(partial(map, len), values)))
    if drop_empty and (not all(flat) or any(map(str.isspace, flat))):  # a row with an empty or blank value:
        empty = list(map(_or, map(not_, map(all, values)), map(any, map(partial(map, str.isspace), values))))
        counted = [0 if e else c for e, c in zip(empty, counted)]  # code EMPTY, 0 characters
        limit = max_chars if max_chars is not None else math.inf
        codes = bytes([EMPTY if e else MAX_CHARS if c >= limit else PASSED for e, c in zip(empty, counted)])
    elif max_chars is not None:
        codes = bytes(map(max_chars.__le__, counted)).translate(_OVER)
    else:
        codes = bytes([PASSED]) * n
    return codes, array("I", counted), rows


def scan(data: bytes, check, render, digest, offsets: bool, sign=None) -> tuple:
    """Check the lines of `data` (whole lines; only the file's last may lack its newline) as `check` would one by one.

    -> (lines, codes, characters, line starts (or None), digests (or None), bytes to write (or None), bad lines,
    signed (or None)). With `sign` (the first pass of --near-dedup), signed is sign's result for the rows that passed.
    Lines are checked BATCH at a time by _ordinary; a batch with any line that is not an ordinary row goes through
    `check` line by line, so whatever is unusual gets the same verdict and message as in one process.
    """
    lines = BytesIO(data).readlines()
    n = len(lines)
    codes = bytearray(n)  # BLANK
    chars = array("I", bytes(4 * n))
    digests = [None] * n if digest is not None else None
    rows = [None] * n if render is not None else None
    bad = []
    signed = [] if sign is not None else None
    plan = check.plan
    for start in range(0, n, BATCH):
        batch = lines[start:start + BATCH]
        ordinary = _ordinary(batch, plan) if plan is not None else None
        if ordinary is not None:
            batch_codes, batch_chars, batch_rows = ordinary
            codes[start:start + len(batch)] = batch_codes
            chars[start:start + len(batch)] = batch_chars
            if digests is None and rows is None and signed is None:
                continue
            passed = [(i, batch_rows[i - start]) for i in range(start, start + len(batch)) if codes[i] == PASSED]
        else:
            passed = []
            for i, line in enumerate(batch, start):
                try:
                    checked = check(line)
                except BadLine as exc:
                    codes[i] = BAD
                    bad.append((i, exc.reason, exc.field, exc.fix, line))
                    continue
                if checked is None:
                    continue
                row, reason, chars[i] = checked
                codes[i] = _CODES[reason]
                if reason is None:
                    passed.append((i, row))
        for i, row in passed:
            if digests is not None:
                digests[i] = digest(row)
            if rows is not None:
                line = lines[i]
                rows[i], to_val = render(row, line if line.endswith(b"\n") else line + b"\n")
                if to_val:
                    codes[i] = PASSED_VAL
        if signed is not None:
            signed += passed
    starts = array("Q", accumulate(map(len, lines), initial=0)) if offsets else None
    return n, codes, chars, starts, digests, rows, bad, sign(signed) if signed is not None else None


def chunk_scanner(fd: int, size: int, opts, with_sample: bool, chunk: int, sign: bool = False):
    """A function of a chunk's number k: (its byte offset, scan's result) for the lines starting in bytes
    [k * chunk, (k + 1) * chunk) of the file. `sign`: with the near-dedup signatures of the rows that passed, and
    without the bytes to write (that first pass writes nothing)."""
    check = line_checker(opts)
    render = None if with_sample or sign else renderer(opts)
    digest = digester(opts)
    signer = None
    if sign:  # numpy is imported only here: a worker of an ordinary pass stays small
        from llf_recipes.data.neardup import signed_rows

        signer = partial(signed_rows, fields=opts.fields)

    def scan_chunk(k: int) -> tuple:
        lo, hi = _cut(fd, k * chunk, size), _cut(fd, (k + 1) * chunk, size)
        return lo, scan(os.pread(fd, hi - lo, lo) if hi > lo else b"", check, render, digest, with_sample, signer)

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
    path, options, size, with_sample, chunk, sign = receive(stdin)
    with open(path, "rb", buffering=0) as fh:
        scan_chunk = chunk_scanner(fh.fileno(), size, SimpleNamespace(**options), with_sample, chunk, sign)
        while len(asked := stdin.read(8)) == 8:
            lo, (n, codes, chars, starts, digests, rows, bad, signed) = scan_chunk(int.from_bytes(asked, "little"))
            send(out, (lo, n, bytes(codes), chars.tobytes(), starts.tobytes() if starts is not None else None, digests,
                       rows, bad, signed))

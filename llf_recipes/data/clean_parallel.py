"""Every line of a large JSONL file checked by this process and worker processes at once, merged in file order.

The file is cut at line starts into chunks of about CHUNK_BYTES (every process finds the same cuts). Chunks are handed
out on demand: each worker is kept AHEAD chunks ahead, and whenever the next chunk to merge is a worker's and its
result has not arrived, this process checks the next unassigned chunk itself (holding at most OWN_MAX such results),
so a process that the machine's other work holds back does not stall the other. A process reads a chunk with one
pread, checks each line with the same line_checker as a single process would, and returns one code per line (blank,
passed, bad, or why it was dropped) with the characters of each row and what the options need: the dedup digest of
each row that passed, the bytes to write when no sample is taken, line offsets when one is, and in the first pass of
--near-dedup the MinHash signatures of the rows that passed (neardup_pass.py). This process merges the chunks in file
order, so dedup keeps the first copy, rejects and a stop name the same file:line, the sample draws the same rows and
the output is byte for byte a single process's. Memory stays a few MB per process whatever the size of the file, and a
sampled row is held as its offset and read back at the end.
"""

from __future__ import annotations

import marshal
import os
import select
import sys
from collections import deque
from collections.abc import Callable
from itertools import compress
from typing import TYPE_CHECKING

from llf_recipes.data.clean_check import CleanOptions, CleanStats
from llf_recipes.data.clean_lines import (
    BLANK,
    DUPLICATE,
    EMPTY,
    MAX_CHARS,
    NEAR_DUPLICATE,
    OPTIONS,
    PASSED,
    PASSED_VAL,
    BadLine,
    chunk_scanner,
    send,
)
from llf_recipes.data.clean_write import reject

if TYPE_CHECKING:
    from llf_recipes.data.clean_sample import Sample
    from llf_recipes.data.clean_write import Writer

# Small chunks keep each process's memory small (a chunk and its lines); a worker imports only what checking needs.
CHUNK_BYTES = 1 << 18
MIN_BYTES = 64 << 20  # below this, starting a worker costs more than it saves
AHEAD, OWN_MAX = 8, 8
_DROPPED = ((EMPTY, "empty"), (MAX_CHARS, "max_chars"), (DUPLICATE, "duplicate"), (NEAR_DUPLICATE, "near_duplicate"))


def _table(*codes: int) -> bytes:
    """A bytes.translate table: 1 for the given codes, 0 for every other."""
    return bytes(1 if i in codes else 0 for i in range(256))


_ANY_PASSED, _TRAIN, _VAL = _table(PASSED, PASSED_VAL), _table(PASSED), _table(PASSED_VAL)


def workers_for(opts: CleanOptions, size: int, is_file: bool, min_bytes: int = MIN_BYTES) -> int:
    """Worker processes to start besides this one: none for an input under min_bytes, for options that need this
    process's state line by line (a tokenizer), or on one core."""
    if not is_file or size < min_bytes or opts.max_tokens is not None \
            or opts.token_stats or not opts.parses_every_line:
        return 0
    return 1 if (os.cpu_count() or 1) > 1 else 0


class _Worker:
    """A worker process: send it chunk numbers (ask), read its results in the same order (result), and see whether the
    next one has arrived (ready)."""

    def __init__(self, job: tuple):
        import subprocess
        import tempfile

        self.err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        code = "from llf_recipes.data.clean_lines import serve; serve()"
        # A fresh interpreter: a forked one would carry this process's memory. close_fds=False lets subprocess use
        # posix_spawn, which execs at once (this process's descriptors are not inheritable, so none leaks).
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, close_fds=False)
        send(self.proc.stdin, job)
        self.fd = self.proc.stdout.fileno()  # read raw: `ready` must see every byte that has arrived
        self.buffer = bytearray()
        self.asked: deque[int] = deque()

    def ask(self, k: int) -> None:
        self.asked.append(k)
        self.proc.stdin.write(k.to_bytes(8, "little"))
        self.proc.stdin.flush()

    def _frame(self) -> int:
        """The length of the first whole result in the buffer (with its 8-byte head), or 0."""
        if len(self.buffer) >= 8:
            end = 8 + int.from_bytes(self.buffer[:8], "little")
            if len(self.buffer) >= end:
                return end
        return 0

    def _read(self) -> None:
        data = os.read(self.fd, 1 << 20)
        if not data:
            self.proc.wait()
            self.err.seek(0)
            detail = self.err.read().decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"a clean worker process stopped (exit {self.proc.returncode})"
                               + (f": {detail[-1]}" if detail else ""))
        self.buffer += data

    def ready(self) -> bool:
        while not self._frame() and select.select([self.fd], [], [], 0)[0]:
            self._read()
        return bool(self._frame())

    def result(self) -> tuple:
        """The next chunk's (offset, scan's result), as scan returns it."""
        while not (end := self._frame()):
            self._read()
        lo, n, codes, chars, starts, digests, rows, bad, signed = marshal.loads(memoryview(self.buffer)[8:end])
        del self.buffer[:end]
        self.asked.popleft()
        starts = memoryview(starts).cast("Q") if starts is not None else None
        return lo, (n, bytearray(codes), memoryview(chars).cast("I"), starts, digests, rows, bad, signed)

    def close(self, ok: bool) -> None:
        if not ok:
            self.proc.kill()
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.wait()
        self.err.close()


def every_line(fd: int, size: int, where: str, writer: Writer, sample: Sample | None, rejects, stats: CleanStats,
               opts: CleanOptions, workers: int, advance: Callable | None = None,
               taken: frozenset = frozenset()) -> int:
    """As Reader.every_line, over the file `fd` with `workers` worker processes: rows that pass are written, or
    offered to the sample as (offset, length, characters). Returns how many rows passed."""
    with_sample = sample is not None
    near = stats.near  # --near-dedup: signatures collected in a first pass (signing), rows dropped in the second
    signing = near is not None and near.collecting
    chunk = CHUNK_BYTES
    total = -(-size // chunk)
    started, ok = [], False
    try:
        options = {name: getattr(opts, name) for name in OPTIONS}
        for _ in range(workers):
            started.append(_Worker((str(opts.input), options, size, with_sample, chunk, signing)))
        scan_chunk = chunk_scanner(fd, size, opts, with_sample, chunk, signing)
        owner: dict[int, _Worker] = {}  # chunk -> the worker asked for it, until merged
        own: dict[int, tuple] = {}  # chunk -> its result, checked here ahead of its turn
        seen: set[bytes] | None = set() if opts.dedup or opts.dedup_on else None
        dropped, out, val = stats.dropped, writer.out, writer.val
        next_line = sample.next_line if with_sample else 0
        base = kept = parsed = unassigned = 0
        for k in range(total):
            while True:
                for worker in started:
                    while len(worker.asked) < AHEAD and unassigned < total:
                        worker.ask(unassigned)
                        owner[unassigned] = worker
                        unassigned += 1
                if k in own:
                    result = own.pop(k)
                    break
                worker = owner.get(k)  # the first chunk this worker was asked for and has not answered
                if worker is None:  # no worker at all
                    result, unassigned = scan_chunk(k), k + 1
                    break
                if worker.ready() or unassigned >= total or len(own) >= OWN_MAX:
                    result = worker.result()
                    del owner[k]
                    break
                own[unassigned] = scan_chunk(unassigned)  # rather than wait: check the next chunk here
                unassigned += 1
            lo, (n, codes, chars, starts, digests, rows, bad, signed) = result
            for i, reason, field, fix, piece in bad:
                reject(rejects, stats, where, base + i + 1, piece, BadLine(reason, field, fix))
            if seen is not None:
                for i, digest in zip(compress(range(n), digests), filter(None, digests)):
                    if digest in seen:
                        codes[i] = DUPLICATE
                    else:
                        seen.add(digest)
            if near is not None:
                for i in near.chunk(base, codes.translate(_ANY_PASSED), signed):
                    codes[i] = NEAR_DUPLICATE
            parsed += n - codes.count(BLANK) - len(bad)
            for code, reason in _DROPPED:
                count = codes.count(code)
                if count:
                    dropped[reason] += count
            passed = codes.translate(_ANY_PASSED)
            kept += passed.count(1)
            if rows is not None:
                train = codes.translate(_TRAIN)
                out.write(b"".join(compress(rows, train)))
                stats.written += train.count(1)
                if val is not None:
                    to_val = codes.translate(_VAL)
                    val.write(b"".join(compress(rows, to_val)))
                    stats.val_written += to_val.count(1)
                stats.add_many(compress(chars, passed))
            if with_sample:
                end = base + n
                while next_line <= end:
                    i = next_line - base - 1
                    item = None
                    if passed[i] and next_line not in taken:
                        item = (lo + starts[i], starts[i + 1] - starts[i], chars[i])
                    sample.offer(next_line, item)
                    next_line = sample.next_line
            base += n
            if advance is not None:
                advance(lo)
        ok = True
    finally:
        for worker in started:
            worker.close(ok)
    stats.lines, stats.parsed = base, parsed
    return kept

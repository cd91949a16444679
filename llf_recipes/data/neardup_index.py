"""Which rows are near-duplicates of an earlier row, found from their MinHash signatures (neardup.py) in two steps.

Collecting (the first pass over the input, neardup_pass.py): each row that passed the other checks, in file order,
leaves its line number, one 64-bit key per LSH band (datasketch's optimal split of the NUM_PERM values for the
threshold, weighted against misses) and its signature's low bytes, appended to files in a temporary directory beside
the output (`.OUT.PID.XXXX.tmp`, removed at the end, or by the next run writing OUT if this one was killed).

Resolving: per band, the keys are sorted (a stable argsort of one band at a time), and rows whose band agrees form a
group. Then, in file order, each row that is in any group of two or more is compared with the first CANDIDATES rows
kept in each of its groups; it is dropped when one of them shares at least `threshold` of its NUM_PERM values (the
most similar, the earliest among equals, counts as the row it duplicates), otherwise it is kept, and counts among the
first rows kept of its groups. So the first row of a cluster is kept, and the outcome depends only on the rows and
their order, never on how many processes computed the signatures. Rows in no group are kept without a comparison.
A group can hold several kept rows, so a row is compared with up to CANDIDATES of them, not only the first.

Memory: while collecting, a few MB; the files take 8 + 8 x bands + NUM_PERM bytes per row (248 bytes at threshold
0.8: 14 bands; 648 at 0.2: 64 bands; at most 1,160 near 0: 128 bands). Resolving holds one band's keys, order and groups at a time (about 40 bytes per row), then, for the
rows in some group, their groups (8 bytes each), their signatures' low bytes (128 bytes) and the rows kept per group
as Python lists; afterwards only the line numbers dropped and those they duplicate (16 bytes per row dropped) and a
byte per line (figures at 2M rows in the README's Benchmarks). The comparison uses 8 bits of each value: two different minima agree by chance 1 in 256, which raises the
estimate of a pair at similarity J by (1 - J) / 256, under 0.1 percentage point at J = 0.8.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from llf_recipes.data.neardup import NUM_PERM, minhashes, np, row_text
from llf_recipes.errors import LlfError

EXAMPLES = 5
# (false candidates, misses): candidates are checked against their signature, so a missed pair costs more than an
# extra candidate; weighing misses 9 to 1 gives 14 bands of 9 values at threshold 0.8
LSH_WEIGHTS = (0.1, 0.9)
BATCH = 256  # rows signed together when they come one at a time
CANDIDATES = 8  # rows kept per group that a later row of the group is compared with: the first 8
_BLOCK_ROWS = 1 << 16  # rows of low bytes read at once when resolving (8 MB)


def band_split(threshold: float) -> tuple[int, int]:
    """(bands, values per band): datasketch's split of NUM_PERM values for `threshold`, weighing misses against false
    candidates as LSH_WEIGHTS does (14 bands of 9 values at 0.8)."""
    from datasketch import MinHashLSH

    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM, weights=LSH_WEIGHTS)
    except ValueError:  # at threshold 1 the best split is one band of every value, which MinHashLSH does not index
        return 1, NUM_PERM
    return lsh.b, lsh.r


class NearDuplicates:
    """`is_duplicate(lineno, row)` and `chunk` collect signatures until `resolve`, and afterwards say which rows to
    drop. `removed`, `clusters` and `examples` describe what was found."""

    def __init__(self, threshold: float, fields: tuple[str, ...], beside: Path):
        try:
            self.bands, self.rows_per_band = band_split(threshold)
        except ImportError:
            raise LlfError("--near-dedup needs the datasketch package", key="--near-dedup",
                           fix="pip install 'llf-recipes[data]'") from None
        self.threshold, self.fields = threshold, fields
        self.need = math.ceil(threshold * NUM_PERM - 1e-9)  # values that must agree
        self._key_mult = np.array([0x9E3779B97F4A7C15 + 2 * i for i in range(self.rows_per_band)], dtype=np.uint64)
        self.collecting = True
        self.examples: list[tuple[int, int, float]] = []  # (dropped line, kept line, estimated similarity)
        # named as the output's temporaries are: if this process is killed, the next run writing it removes them
        self._dir = Path(tempfile.mkdtemp(prefix=f".{beside.name}.{os.getpid()}.", suffix=".tmp", dir=beside.parent))
        self._files = []
        try:
            for name in ("lines", "low", *(f"band{b}" for b in range(self.bands))):
                self._files.append(open(self._dir / name, "wb", buffering=1 << 20))  # noqa: SIM115 - closed in close
        except BaseException:
            self.close()
            raise
        self._count = 0
        self._pending: list[tuple[int, str]] = []
        self.dropped = np.zeros(0, dtype=np.int64)  # line numbers, ascending
        self.kept_for = np.zeros(0, dtype=np.int64)  # the kept line each dropped line duplicates
        self._is_dropped = bytearray()

    # collecting
    def add(self, lines, signatures) -> None:
        """Signatures (uint32, NUM_PERM per row) of rows at these line numbers, after every row stored so far."""
        if not len(lines):
            return
        m = len(lines)
        bands = signatures[:, :self.bands * self.rows_per_band].reshape(m, self.bands, self.rows_per_band)
        keys = (bands.astype(np.uint64) * self._key_mult).sum(axis=2, dtype=np.uint64)
        self._files[0].write(np.asarray(lines, dtype=np.int64).tobytes())
        self._files[1].write(signatures.astype(np.uint8).tobytes())
        for b, fh in enumerate(self._files[2:]):
            fh.write(keys[:, b].tobytes())
        self._count += m

    def _flush(self) -> None:
        if self._pending:
            lines, texts = zip(*self._pending)
            signatures, has_text = minhashes(list(texts))
            self.add(np.array(lines)[has_text], signatures[has_text])
            self._pending.clear()

    def is_duplicate(self, lineno: int, row: dict) -> bool:
        """Collecting: keep the row's signature for later, False. Resolved: whether the row is dropped."""
        if self.collecting:
            self._pending.append((lineno, row_text(row, self.fields)))
            if len(self._pending) >= BATCH:
                self._flush()
            return False
        return lineno < len(self._is_dropped) and self._is_dropped[lineno] == 1

    def chunk(self, base: int, passed: bytes, signed) -> list[int]:
        """A chunk of lines from line base + 1 on, `passed[i]` 1 for the rows that passed every check before this
        one. Collecting: `signed` is (indices of the rows signed, their signatures as bytes) and the signatures of
        the rows that passed are kept; returns []. Resolved: the indices of the rows to drop."""
        if self.collecting:
            if signed is not None:
                index = np.frombuffer(signed[0], dtype=np.uint32)
                signatures = np.frombuffer(signed[1], dtype=np.uint32).reshape(len(index), NUM_PERM)
                keep = np.frombuffer(passed, dtype=np.uint8)[index].astype(bool)
                self.add(base + 1 + index[keep].astype(np.int64), signatures[keep])
            return []
        lo, hi = np.searchsorted(self.dropped, (base + 1, base + len(passed) + 1))
        return [i for i in (self.dropped[lo:hi] - base - 1).tolist() if passed[i]]

    # resolving
    def resolve(self) -> None:
        """Decide which rows are dropped (see the module's docstring); the files are removed."""
        try:
            self._flush()
            error = self._close_files()
            if error is not None:  # a file's last bytes were not written (a full disk): its rows are incomplete
                raise error
            n = self._count
            rows, groups = self._grouped(n)
            if len(rows):
                self._compare(rows, groups, n)
        finally:
            self.close()
        self.collecting = False
        size = int(self.dropped[-1]) + 1 if len(self.dropped) else 0
        self._is_dropped = bytearray(size)
        for line in self.dropped.tolist():
            self._is_dropped[line] = 1

    def _grouped(self, n: int):
        """(stored row, group) for every row in a group of two or more in any band, ascending by row (by band for a
        row); such groups are numbered from 0 across all bands."""
        index = np.int32 if n < 2**31 else np.int64
        numbers = np.int32 if self.bands * n < 2**31 else np.int64  # at most n // 2 groups per band
        rows, groups, offset = [], [], 0
        for b in range(self.bands if n else 0):
            keys = np.fromfile(self._dir / f"band{b}", dtype=np.uint64)
            order = np.argsort(keys, kind="stable")
            keys = keys[order]
            same = keys[1:] == keys[:-1]
            del keys
            member = np.zeros(n, dtype=bool)
            member[1:] = same
            member[:-1] |= same
            opens = member.copy()  # the first member of each group of two or more
            opens[1:] &= ~same
            group = np.cumsum(opens[member], dtype=np.int64) - 1 + offset
            rows.append(order[member].astype(index))
            groups.append(group.astype(numbers))
            if len(group):
                offset = int(group[-1]) + 1
            del order, member, opens, group
        if not rows:
            return np.zeros(0, dtype=index), np.zeros(0, dtype=numbers)
        rows, groups = np.concatenate(rows), np.concatenate(groups)
        order = np.argsort(rows, kind="stable")
        return rows[order], groups[order]

    def _compare(self, rows, groups, n: int) -> None:
        starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
        grouped = rows[starts]  # each row in a group once; its groups are groups[starts[k]:starts[k + 1]]
        low = np.empty((len(grouped), NUM_PERM), dtype=np.uint8)
        with open(self._dir / "low", "rb") as fh:
            for s in range(0, n, _BLOCK_ROWS):
                block = np.fromfile(fh, dtype=np.uint8, count=_BLOCK_ROWS * NUM_PERM).reshape(-1, NUM_PERM)
                a, z = np.searchsorted(grouped, (s, s + len(block)))
                low[a:z] = block[grouped[a:z] - s]
        lines = np.fromfile(self._dir / "lines", dtype=np.int64)[grouped]
        kept_in: list[list[int] | None] = [None] * (int(groups.max()) + 1)  # the first rows kept in each group
        need, most = self.need, CANDIDATES
        drop, kept, agreed = [], [], []
        bounds = np.append(starts, len(rows))
        for first in range(0, len(grouped), _BLOCK_ROWS):  # as Python lists a block at a time: they take more memory
            last = min(first + _BLOCK_ROWS, len(grouped))
            edges = (bounds[first:last + 1] - bounds[first]).tolist()
            block = groups[bounds[first]:bounds[last]].tolist()
            for k in range(first, last):
                mine = block[edges[k - first]:edges[k - first + 1]]
                candidates = set()
                for g in mine:
                    if kept_in[g] is not None:
                        candidates.update(kept_in[g])
                if candidates:
                    candidates = sorted(candidates)
                    agree = (low[candidates] == low[k]).sum(axis=1)
                    best = int(agree.argmax())  # the most similar; the earliest among equals
                    if agree[best] >= need:
                        drop.append(k)
                        kept.append(candidates[best])
                        agreed.append(int(agree[best]))
                        continue
                for g in mine:
                    if kept_in[g] is None:
                        kept_in[g] = [k]
                    elif len(kept_in[g]) < most:
                        kept_in[g].append(k)
        self.dropped, self.kept_for = lines[drop], lines[kept]
        self.examples = [(int(d), int(c), a / NUM_PERM) for d, c, a in
                         zip(self.dropped[:EXAMPLES], self.kept_for[:EXAMPLES], agreed[:EXAMPLES])]

    def _close_files(self) -> OSError | None:
        """Close every file, even when one fails to write its last bytes; -> the first such error."""
        error = None
        for fh in self._files:
            try:
                fh.close()
            except OSError as exc:
                error = error or exc
        return error

    def close(self) -> None:
        """Remove the files (what they hold is no longer needed, whether or not they could be written)."""
        try:
            self._close_files()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def removed(self) -> int:
        return len(self.dropped)

    @property
    def clusters(self) -> Counter:
        """Kept line -> rows dropped as its near-duplicates."""
        return Counter(self.kept_for.tolist())

"""Near-duplicate rows: MinHash signatures (datasketch) over character n-grams, found through LSH banding.

Each row's text (its text fields, or every string in it) is lower-cased, its white space collapsed, and cut into
overlapping character n-grams, so Chinese and other unsegmented text works as well as English. datasketch's MinHash
turns the n-gram set into NUM_PERM values whose agreement estimates the Jaccard similarity of two sets; the bands
(datasketch's optimal split for the threshold, weighted against misses) find the rows kept so far that could be that similar, and a candidate
counts only when its signature agrees with the row's in at least `threshold` of the values. A row that matches is
dropped; the first row of a cluster is kept.

Memory is bounded by the rows kept, not their text: per kept row a signature (NUM_PERM 16-bit values, 256 bytes) and
one dictionary entry per band: about 1.8 kB in all as measured at 200k rows (bench/bench_clean.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

try:
    import numpy as np
except ImportError:  # datasketch needs numpy: NearDuplicates says what to install
    np = None

from llf_recipes.errors import LlfError

NGRAM = 5  # characters per shingle
NUM_PERM = 128
SEED = 1  # the MinHash permutations: the same rows are dropped on every run
EXAMPLES = 5
# (false candidates, misses): candidates are checked against their signature, so a missed pair costs more than an
# extra candidate; weighing misses 9 to 1 gives 14 bands of 9 values at threshold 0.8
LSH_WEIGHTS = (0.1, 0.9)


def row_text(row: dict, fields: tuple[str, ...]) -> str:
    """The text a row is compared on: its `fields` (every value when none), strings inside lists and objects too."""
    parts: list[str] = []

    def walk(value) -> None:
        if value.__class__ is str:
            parts.append(value)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    for value in ([row.get(name) for name in fields] if fields else row.values()):
        walk(value)
    return "\n".join(parts)


def shingles(text: str, n: int = NGRAM) -> set[bytes]:
    text = " ".join(text.casefold().split())
    if len(text) <= n:
        return {text.encode()} if text else set()
    return {text[i:i + n].encode() for i in range(len(text) - n + 1)}


# one odd 64-bit multiplier per position in the n-gram: a shingle's hash is the wrapped sum of code point x multiplier
_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD)


def shingle_hashes(text: str, n: int = NGRAM):
    """The 32-bit hashes of `shingles(text)`, computed over the code points with numpy: no Python per n-gram.
    (datasketch's affine32 scheme mixes them again before its permutations.)"""
    text = " ".join(text.casefold().split())
    if not text:
        return None
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(points) <= n:
        windows = points[None, :]
    else:
        windows = np.lib.stride_tricks.sliding_window_view(points, n)
    mult = np.array(_MULTIPLIERS[:windows.shape[1]], dtype=np.uint64)
    h = (windows * mult).sum(axis=1, dtype=np.uint64)
    h ^= h >> np.uint64(32)
    return np.unique(h & np.uint64(0xFFFFFFFF))


def jaccard(a: set, b: set) -> float:
    """The exact similarity the MinHash signatures estimate."""
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass
class NearDuplicates:
    """Rows seen so far, as signatures; `is_duplicate` says whether a row is near one of them, and remembers it if not."""

    threshold: float = 0.8
    fields: tuple[str, ...] = ()
    clusters: Counter = field(default_factory=Counter)  # kept line -> rows dropped as its near-duplicates
    examples: list = field(default_factory=list)  # (dropped line, kept line, estimated similarity), the first few

    def __post_init__(self):
        try:
            from datasketch import MinHash
        except ImportError:
            raise LlfError("--near-dedup needs the datasketch package", key="--near-dedup",
                           fix="pip install 'llf-recipes[data]'") from None
        from datasketch.lsh import _optimal_param  # the band split that weighs misses against false candidates

        self._minhash = MinHash
        self._perms = MinHash(num_perm=NUM_PERM, seed=SEED, scheme="affine32").permutations
        self.bands, self.rows_per_band = _optimal_param(self.threshold, NUM_PERM, *LSH_WEIGHTS)
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self._sigs = np.empty((1024, NUM_PERM), dtype=np.uint16)
        self._lines: list[int] = []
        self._need = int(np.ceil(self.threshold * NUM_PERM - 1e-9))

    def signature(self, text: str) -> np.ndarray | None:
        grams = shingle_hashes(text)
        if grams is None:
            return None
        m = self._minhash(num_perm=NUM_PERM, permutations=self._perms, scheme="affine32", hashfunc=int)
        m.update_batch(grams)
        return m.hashvalues

    def is_duplicate(self, lineno: int, row: dict) -> bool:
        hv = self.signature(row_text(row, self.fields))
        if hv is None:
            return False
        r = self.rows_per_band
        keys = [hash(hv[i * r:(i + 1) * r].tobytes()) for i in range(self.bands)]
        candidates: set[int] = set()
        for bucket, key in zip(self._buckets, keys):
            hit = bucket.get(key)
            if hit is not None:
                candidates.update(hit) if isinstance(hit, list) else candidates.add(hit)
        small = hv.astype(np.uint16)  # 16 bits per value: two different values agree by chance 1 in 65536
        if candidates:
            order = sorted(candidates)
            agree = (self._sigs[order] == small).sum(axis=1)
            best = int(np.argmax(agree))  # the most similar; the earliest among equals
            if agree[best] >= self._need:
                kept = self._lines[order[best]]
                self.clusters[kept] += 1
                if len(self.examples) < EXAMPLES:
                    self.examples.append((lineno, kept, float(agree[best]) / NUM_PERM))
                return True
        index = len(self._lines)
        if index == len(self._sigs):
            self._sigs = np.concatenate([self._sigs, np.empty_like(self._sigs)])
        self._sigs[index] = small
        self._lines.append(lineno)
        for bucket, key in zip(self._buckets, keys):
            hit = bucket.setdefault(key, index)
            if hit != index:
                hit.append(index) if isinstance(hit, list) else bucket.__setitem__(key, [hit, index])
        return False

    @property
    def removed(self) -> int:
        return sum(self.clusters.values())

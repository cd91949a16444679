"""Near-duplicate rows: MinHash signatures over character n-grams, computed with numpy many rows at a time.

Each row's text (its text fields, or every string in it) is lower-cased, its white space collapsed, and cut into
overlapping character n-grams, so Chinese and other unsegmented text works as well as English. Each n-gram is hashed
from its code points (a polynomial in 64-bit arithmetic, then murmur3's finaliser, keeping the high 32 bits), and
NUM_PERM seeded permutations of the 32-bit values, x -> a*x + b mod 2^32 with a odd, each keep their minimum: the
fraction of the NUM_PERM minima two rows share estimates the Jaccard similarity of their n-gram sets.

Why this and not datasketch's MinHash (whose band split neardup_index.py still uses): datasketch applies its
permutations in 64-bit arithmetic with a modulo and costs a Python object per row; these permutations need neither and
run over a block of rows at once, several times faster (figures in the README's Benchmarks). Both estimate with the
binomial spread, sqrt(J(1-J)/128), and no bias. Hashing each n-gram with xxhash would cost a Python call per n-gram.

Finding which rows to drop from the signatures: neardup_index.py; the pass over the input that computes them:
neardup_pass.py.
"""

from __future__ import annotations

from hashlib import blake2b

try:
    import numpy as np
except ImportError:  # NearDuplicates says what to install
    np = None

NGRAM = 5  # characters per shingle
NUM_PERM = 128
SEED = b"llf-recipes near-duplicates 1"  # the permutations: the same rows are dropped on every run, on every machine
BLOCK = 16  # rows whose permuted n-grams are held at once (128 x 16 x ~400 x 4 bytes: about 3 MB, in the caches)
COLUMNS = 1 << 15  # at most this many n-grams permuted at once (128 x 4 bytes each: 16 MB), however long a row is
_PAD = "\0" * (NGRAM - 1)  # between two texts: no n-gram spans both, and a text shorter than NGRAM is one n-gram
# one odd 64-bit multiplier per position in the n-gram
_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD)


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


def normal(text: str) -> str:
    return " ".join(text.casefold().split())


def shingles(text: str, n: int = NGRAM) -> set[bytes]:
    """The n-grams whose hashes `minhashes` takes the minima of (for measuring similarity exactly)."""
    text = normal(text)
    if len(text) <= n:
        return {text.encode()} if text else set()
    return {text[i:i + n].encode() for i in range(len(text) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """The exact similarity the MinHash signatures estimate."""
    return len(a & b) / len(a | b) if a or b else 1.0


def _seeded(count: int, salt: bytes):
    """`count` uint32 values from SEED: the same on every machine and numpy version."""
    data = b"".join(blake2b(salt + i.to_bytes(4, "little"), key=SEED, digest_size=64).digest()
                    for i in range(-(-count * 4 // 64)))
    return np.frombuffer(data[:count * 4], dtype="<u4").astype(np.uint32)


_PERMS = None


def _permutations():
    global _PERMS
    if _PERMS is None:
        a = _seeded(NUM_PERM, b"a") | np.uint32(1)  # odd: a permutation of the 32-bit values
        _PERMS = (a[:, None], _seeded(NUM_PERM, b"b")[:, None], np.array(_MULTIPLIERS[:NGRAM], dtype=np.uint64))
    return _PERMS


def _finalise(h):
    """murmur3's 64-bit finaliser, in place: every bit of the n-gram's hash moves every bit of the result."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def minhashes(texts: list[str]):
    """-> (signatures: one row of NUM_PERM uint32 minima per text, has_text: False for a text with no n-gram,
    whose signature means nothing). A text's signature does not depend on the others it comes with."""
    a, b, mult = _permutations()
    norm = [normal(t) for t in texts]
    m = len(norm)
    out = np.zeros((m, NUM_PERM), dtype=np.uint32)
    lens = np.fromiter(map(len, norm), dtype=np.int64, count=m)
    if not m:
        return out, lens > 0
    starts = np.zeros(m, dtype=np.int64)
    np.cumsum(lens[:-1] + len(_PAD), out=starts[1:])
    ends = starts + np.maximum(lens - NGRAM + 1, 1)  # the n-grams of text i start in [starts[i], ends[i])
    points = np.frombuffer((_PAD.join(norm) + _PAD).encode("utf-32-le"), dtype="<u4").astype(np.uint64)
    width = len(points) - NGRAM + 1
    h = points[:width] * mult[0]
    for k in range(1, NGRAM):
        h += points[k:k + width] * mult[k]
    grams = (_finalise(h) >> np.uint64(32)).astype(np.uint32)
    # blocks of up to BLOCK rows spanning at most COLUMNS n-grams; a row longer than that is a block of its own,
    # permuted a stretch of COLUMNS n-grams at a time, keeping the running minima
    first, last = starts.tolist(), ends.tolist()
    blocks, s = [], 0
    while s < m:
        e = s + 1
        while e < m and e - s < BLOCK and last[e] - first[s] <= COLUMNS:
            e += 1
        blocks.append((s, e))
        s = e
    # one buffer for every block: a new one each time would cost more in page faults than the arithmetic
    buffer = np.empty((NUM_PERM, min(COLUMNS, max(last[e - 1] - first[s] for s, e in blocks))), dtype=np.uint32)
    for s, e in blocks:
        lo, hi = first[s], last[e - 1]
        if hi - lo > COLUMNS:  # one long row
            low = np.full(NUM_PERM, 0xFFFFFFFF, dtype=np.uint32)
            for p in range(lo, hi, COLUMNS):
                q = min(p + COLUMNS, hi)
                permuted = buffer[:, :q - p]
                np.multiply(a, grams[p:q], out=permuted)
                permuted += b
                np.minimum(low, permuted.min(axis=1), out=low)
            out[s] = low
            continue
        permuted = buffer[:, :hi - lo]
        np.multiply(a, grams[lo:hi], out=permuted)
        permuted += b
        cuts = np.empty(2 * (e - s) - 1, dtype=np.int64)  # each text's n-grams, and the padding between texts
        cuts[0::2] = starts[s:e] - lo
        cuts[1::2] = ends[s:e - 1] - lo
        out[s:e] = np.minimum.reduceat(permuted, cuts, axis=1)[:, 0::2].T
    return out, lens > 0


def signed_rows(passed: list[tuple[int, dict]], fields: tuple[str, ...]) -> tuple[bytes, bytes]:
    """For a chunk's rows (index, row): (the indices of those with text, as uint32 bytes; their signatures' bytes)."""
    signatures, has_text = minhashes([row_text(row, fields) for _, row in passed])
    index = np.fromiter((i for i, _ in passed), dtype=np.uint32, count=len(passed))
    return index[has_text].tobytes(), signatures[has_text].tobytes()

"""MinHash signatures (neardup.py): the same whatever the batch and the row's length, in bounded memory."""

import random
import tracemalloc

import numpy as np

from llf_recipes.data import neardup


def texts(seed, sizes):
    rng = random.Random(seed)
    return ["".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(n)) for n in sizes]


def test_a_long_rows_signature_is_the_uncapped_one(monkeypatch):
    batch = texts(3, [300, 0, 2, 120_000, 800, 450, 40_000, 7, 900] + [400] * 40)
    capped, has_text = neardup.minhashes(batch)
    monkeypatch.setattr(neardup, "COLUMNS", 1 << 40)  # every row in one buffer, however long
    whole, _ = neardup.minhashes(batch)
    monkeypatch.setattr(neardup, "COLUMNS", 997)  # long rows in many stretches, short blocks
    small, _ = neardup.minhashes(batch)
    assert np.array_equal(capped, whole) and np.array_equal(small, whole)
    assert has_text.tolist() == [n > 0 for n in map(len, batch)]
    alone, _ = neardup.minhashes([batch[3]])  # a text's signature does not depend on the others
    assert np.array_equal(alone[0], whole[3])


def test_one_long_row_takes_bounded_memory():
    (row,) = texts(4, [200_000])
    tracemalloc.start()  # numpy reports its arrays to tracemalloc
    try:
        neardup.minhashes([row])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the buffer is at most COLUMNS x NUM_PERM x 4 bytes (16 MB); the rest is a few arrays of 8 bytes per character
    assert peak < neardup.COLUMNS * neardup.NUM_PERM * 4 + 40 * len(row), peak


def test_signatures_follow_their_definition_on_any_byte_order():
    """A signature computed value by value in Python integers, as neardup's docstring defines it (code points, not
    the machine's byte order, go into each n-gram's hash)."""
    a, b, mult = (x.ravel().tolist() for x in neardup._permutations())
    mask = (1 << 64) - 1

    def finalise(h):
        for shift, times in ((33, 0xFF51AFD7ED558CCD), (33, 0xC4CEB9FE1A85EC53), (33, None)):
            h ^= h >> shift
            h = h * times & mask if times else h
        return h

    text = "Ünïcode  TEXT, 中文 and more 🙂!"
    points = [ord(c) for c in neardup.normal(text)]
    grams = [finalise(sum(p * m for p, m in zip(points[i:i + neardup.NGRAM], mult)) & mask) >> 32
             for i in range(len(points) - neardup.NGRAM + 1)]
    expected = [min((ai * g + bi) & 0xFFFFFFFF for g in grams) for ai, bi in zip(a, b)]
    assert neardup.minhashes([text])[0][0].tolist() == expected


def test_the_band_split_is_datasketchs_for_the_threshold(tmp_path):
    from datasketch import MinHashLSH

    from llf_recipes.data.neardup_index import LSH_WEIGHTS, NearDuplicates, band_split

    assert band_split(0.8) == (14, 9) and band_split(1.0) == (1, neardup.NUM_PERM)
    for threshold in (0.5, 0.7, 0.9):
        lsh = MinHashLSH(threshold=threshold, num_perm=neardup.NUM_PERM, weights=LSH_WEIGHTS)
        assert band_split(threshold) == (lsh.b, lsh.r) and lsh.b * lsh.r <= neardup.NUM_PERM
    near = NearDuplicates(0.8, (), tmp_path / "out.jsonl")
    try:
        assert (near.bands, near.rows_per_band) == (14, 9)
        assert len(list(next(tmp_path.glob(".out.jsonl.*.tmp")).glob("band*"))) == 14
    finally:
        near.close()
    assert not list(tmp_path.iterdir())


def test_threshold_one_drops_rows_with_the_same_normalised_text(cli, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"t": "same text here"}\n{"t": "same text here!"}\n{"t": "Same  text here"}\n')
    code, out, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--near-dedup", "--threshold", "1")
    assert code == 0 and "line 3 ~ line 1 (1.00)" in out, out + err
    assert (tmp_path / "out.jsonl").read_text().count("\n") == 2

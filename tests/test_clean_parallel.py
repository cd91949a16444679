"""`clean` with worker processes (a large input) against `clean` in one process, on the same varied input: the same
rows in every output file byte for byte, the same rejects with the same file:line, the same counts, the same stop."""

from __future__ import annotations

import json
import random

import pytest

from llf_recipes.data import clean_parallel
from llf_recipes.data.clean import CleanOptions, clean
from llf_recipes.errors import LlfError

BAD = [b'{"q": "\xff\xfe", "a": "x"}', b"[1, 2]", b'"text"', b"null", b'{"q": "cut', b'{"q": NaN, "a": "x"}',
       b'{"q": "a\x01b", "a": "x"}', b"\xef\xbb\xbf" + b'{"q": "bom", "a": "x"}', b'{"q": ' + b"[" * 1100 + b"]" * 1100 + b"}",
       b"{'q': 'single'}", b'{"q": "x", "a": "y"},']


def varied_lines(n: int, seed: int, bad: bool) -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        kind = rng.random()
        q = "问" * rng.randint(0, 30) + str(i % 40)  # i % 40: exact duplicates of the text fields, not of the row
        a = rng.choice(["", " \u3000", "答" * rng.randint(1, 60), "x" * 300, None, ["list"], {}, 7])
        row = {"id": i, "q": q, "a": a} if kind > 0.05 else {"id": i, "q": q}  # some lack "a"
        if kind > 0.97:
            row = {"q": "同一行", "a": "完全相同"}  # whole-row duplicates
        line = json.dumps(row, ensure_ascii=rng.random() < 0.2).encode()
        if rng.random() < 0.03:
            line = b""  # a blank line
        elif rng.random() < 0.02:
            line = b"  \t"
        if bad and rng.random() < 0.03:
            line = rng.choice(BAD)
        lines.append(line + (b"\r\n" if rng.random() < 0.1 else b"\n"))
    return lines


def run(tmp_path, name: str, src, workers: int, chunk: int, monkeypatch, **options):
    out, val = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.val.jsonl"
    opts = CleanOptions(input=src, output=out, seed=3, **options)
    if "val_ratio" in options:
        opts.val_out = val
    monkeypatch.setattr(clean_parallel, "workers_for", lambda *a, **k: workers)
    monkeypatch.setattr(clean_parallel, "CHUNK_BYTES", chunk)
    merged = []
    every_line = clean_parallel.every_line
    monkeypatch.setattr(clean_parallel, "every_line", lambda *a, **k: merged.append(1) or every_line(*a, **k))
    try:
        stats = clean(opts)
    except LlfError as exc:
        return ("stopped", str(exc))
    finally:
        assert bool(merged) == (workers > 0)
    files = [p.read_bytes() if p.exists() else None for p in (out, val, opts.rejects)]
    counts = (stats.lines, stats.parsed, stats.read, dict(stats.dropped), stats.rejected, stats.written,
              stats.val_written, stats.chars_min, stats.chars_max, stats.chars_total)
    if stats.near is not None:
        counts += (stats.near.removed, stats.near.clusters, stats.near.examples)
    return files, counts


OPTIONS = [
    {"fields": ("q", "a"), "drop_empty": True, "stats": True, "skip_bad": True},
    {"fields": ("q", "a"), "drop_empty": True, "max_chars": 200, "sample": 50, "stats": True, "skip_bad": True},
    {"drop_empty": True, "dedup": True, "skip_bad": True, "rename": {"q": "prompt"}},
    {"fields": ("q",), "dedup_on": ("q",), "sample": 300, "skip_bad": True, "max_chars": 25},
    {"fields": ("q",), "max_chars": 28, "sample": 5, "dedup": True, "skip_bad": True},  # a second pass over the lines
    {"fields": ("q",), "val_ratio": 0.2, "group_by": "q", "skip_bad": True, "dedup": True},
    {"fields": ("q", "a"), "drop_empty": True, "stats": True},  # stops at the first bad line
    # near-duplicates: found by a first pass with its own worker, dropped by the second
    {"fields": ("q",), "near_dedup": 0.8, "drop_empty": True, "skip_bad": True},
    {"fields": ("q", "a"), "near_dedup": 0.7, "dedup": True, "sample": 200, "skip_bad": True, "rename": {"q": "p"}},
    {"near_dedup": 0.8, "val_ratio": 0.2, "skip_bad": True, "max_chars": 40},
    {"fields": ("q",), "near_dedup": 0.8},  # the first pass stops at the first bad line, as the second would
]


@pytest.mark.parametrize("options", OPTIONS, ids=[str(i) for i in range(len(OPTIONS))])
def test_workers_write_what_one_process_writes(tmp_path, monkeypatch, options):
    src = tmp_path / "in.jsonl"
    lines = varied_lines(1500, seed=len(str(options)), bad=True)
    lines[-1] = lines[-1].rstrip(b"\r\n")  # the last line without its newline
    src.write_bytes(b"".join(lines))
    one = run(tmp_path, "one", src, 0, 1 << 20, monkeypatch, **options)
    assert one[0] == "stopped" or one[1][5] > 0, one  # something is written (or the run stops)
    if "near_dedup" in options and one[0] != "stopped":
        assert one[1][3]["near_duplicate"] > 100, one[1]
    assert not list(tmp_path.glob(".*.tmp"))  # the signatures' directory is gone
    for workers, chunk in ((1, 997), (2, 4096), (1, 1 << 20)):
        many = run(tmp_path, f"w{workers}-{chunk}", src, workers, chunk, monkeypatch, **options)
        assert many == one, (workers, chunk)
        assert not list(tmp_path.glob(".*.tmp"))


def test_workers_stop_at_the_first_bad_line_with_its_file_and_line(tmp_path, monkeypatch):
    src = tmp_path / "in.jsonl"
    lines = varied_lines(3000, seed=5, bad=False)
    lines[2345] = b'{"q": "\xff", "a": "x"}\n'
    src.write_bytes(b"".join(lines))
    for options in ({"stats": True}, {"near_dedup": 0.8}):  # with near-dedup, its first pass stops there
        stopped = run(tmp_path, "many", src, 1, 2048, monkeypatch, fields=("q",), **options)
        assert stopped[0] == "stopped" and f"{src}:2346: invalid UTF-8 at byte 8" in stopped[1], stopped
        assert [p.name for p in tmp_path.iterdir()] == ["in.jsonl"]  # no output, no temporaries, no signatures


def test_the_near_dedup_first_pass_sends_back_only_signatures(tmp_path):
    """Signing writes nothing, so a chunk's result holds no bytes to write; the ordinary pass's holds them."""
    import os

    from llf_recipes.data.clean_lines import chunk_scanner

    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(varied_lines(300, seed=4, bad=False)))
    opts = CleanOptions(input=src, output=tmp_path / "out.jsonl", fields=("q",), near_dedup=0.8)
    fd = os.open(src, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        signing = chunk_scanner(fd, size, opts, False, size, sign=True)(0)[1]
        writing = chunk_scanner(fd, size, opts, False, size)(0)[1]
    finally:
        os.close(fd)
    assert signing[5] is None and len(signing[7][0]) > 4 * 200  # no rows; signatures of the rows that passed
    assert writing[5] is not None and sum(map(bool, writing[5])) > 200 and writing[7] is None


def test_dedup_keeps_the_same_rows_with_either_digest(tmp_path, monkeypatch):
    import sys

    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(varied_lines(2000, seed=9, bad=False)))
    options = {"dedup": True, "fields": ("q",), "dedup_on": ()}
    xxh = run(tmp_path, "xxh", src, 0, 1 << 20, monkeypatch, **options)
    monkeypatch.setitem(sys.modules, "xxhash", None)  # import xxhash now fails: BLAKE2b stands in
    blake = run(tmp_path, "blake", src, 0, 1 << 20, monkeypatch, **options)
    assert xxh == blake and xxh[1][3].get("duplicate", 0) > 50


def test_a_worker_starts_only_for_a_large_file_whose_every_line_this_process_need_not_see_in_order(tmp_path):
    """The real rule, not the patched one above: a tokenizer stays in one process, a sample that skips lines needs no
    worker, and a small file or a stream is not worth one (near-dedup's first pass is worth one from a smaller size)."""
    big, small = clean_parallel.MIN_BYTES, clean_parallel.MIN_BYTES - 1
    base = {"input": tmp_path / "in.jsonl", "output": tmp_path / "out.jsonl"}
    multi = (clean_parallel.os.cpu_count() or 1) > 1

    def workers(size=big, is_file=True, **options) -> int:
        return clean_parallel.workers_for(CleanOptions(**base, **options), size, is_file)

    assert workers(stats=True) == int(multi)
    assert workers(dedup=True, sample=10) == int(multi)
    assert workers(stats=True, size=small) == 0
    assert workers(stats=True, is_file=False) == 0
    assert workers(near_dedup=0.8) == int(multi)
    assert workers(near_dedup=0.8, size=8 << 20) == 0
    assert clean_parallel.workers_for(CleanOptions(**base, near_dedup=0.8), 8 << 20, True, min_bytes=8 << 20) == int(multi)
    assert workers(stats=True, max_tokens=100) == 0
    assert workers(stats=True, token_stats=True) == 0
    assert workers(sample=10) == 0  # the sample path parses only the lines it could pick

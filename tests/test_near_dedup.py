"""clean --near-dedup and --dedup-on: planted near-duplicates found, distinct rows kept."""

import json
import random

from llf_recipes.data.neardup import jaccard, shingles

HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def edited(rng, text, edits):
    chars = list(text)
    for _ in range(edits):
        chars[rng.randrange(len(chars))] = rng.choice(HAN)
    return "".join(chars)


def planted_set(seed=11, distinct=1500, planted=120, hard=60):
    """Distinct rows, edited copies of some at a measured similarity >= 0.85, and 'hard' edited copies below 0.6
    that are distinct rows too. Returns the rows and the line numbers (1-based) of the planted copies."""
    rng = random.Random(seed)
    originals = ["".join(rng.choice(HAN) for _ in range(rng.randint(120, 300))) for _ in range(distinct)]
    rows = [{"prompt": t, "response": "好"} for t in originals]
    copies, hard_rows = [], []
    while len(copies) < planted:
        text = rng.choice(originals)
        copy = edited(rng, text, rng.randint(1, 3))
        if jaccard(shingles(text + "\n好"), shingles(copy + "\n好")) >= 0.85:
            copies.append(copy)
    while len(hard_rows) < hard:
        text = rng.choice(originals)
        copy = edited(rng, text, len(text) // 12)
        if jaccard(shingles(text + "\n好"), shingles(copy + "\n好")) < 0.6:
            hard_rows.append(copy)
    extra = [("copy", t) for t in copies] + [("hard", t) for t in hard_rows]
    rng.shuffle(extra)
    planted_lines = []
    for kind, text in extra:
        rows.append({"prompt": text, "response": "好"})
        if kind == "copy":
            planted_lines.append(len(rows))
    return rows, set(planted_lines)


def test_planted_near_duplicates_are_found_and_distinct_rows_kept(cli, tmp_path):
    rows, planted = planted_set()
    src = write_jsonl(tmp_path / "raw.jsonl", rows)
    out = tmp_path / "out.jsonl"
    code, stdout, _ = cli("clean", src, "-o", out, "--near-dedup", "--threshold", "0.8", "--stats")
    assert code == 0
    kept = {r["prompt"] for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    removed = {i for i, r in enumerate(rows, 1) if r["prompt"] not in kept}
    recall = len(removed & planted) / len(planted)
    false_removals = len(removed - planted)
    assert recall >= 0.95, recall
    assert false_removals <= 0.01 * (len(rows) - len(planted)), false_removals
    assert f"near-duplicates: {len(removed)} row(s) dropped" in stdout
    assert "near_duplicate" in stdout
    # the same rows on a second run: the permutations are seeded
    again = tmp_path / "again.jsonl"
    assert cli("clean", src, "-o", again, "--near-dedup")[0] == 0
    assert again.read_bytes() == out.read_bytes()


def test_near_dedup_compares_only_the_named_fields_and_keeps_the_first(cli, tmp_path):
    text = "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm windowsill."
    rows = [{"id": 1, "prompt": text, "response": "a"},
            {"id": 2, "prompt": text.replace("cat", "cow"), "response": "completely different answer here"},
            {"id": 3, "prompt": "An unrelated question about databases and indexes.", "response": "a"}]
    src = write_jsonl(tmp_path / "raw.jsonl", rows)
    out = tmp_path / "out.jsonl"
    code, stdout, _ = cli("clean", src, "-o", out, "--near-dedup", "--fields", "prompt")
    assert code == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [1, 3]
    assert "line 2 ~ line 1" in stdout
    # over the whole row the answers differ enough: both stay
    assert cli("clean", src, "-o", out, "--near-dedup")[0] == 0
    assert len(out.read_text().splitlines()) == 3


def test_dedup_on_a_field(cli, tmp_path):
    rows = [{"prompt": "p1", "response": "a"}, {"prompt": "p1", "response": "b"}, {"prompt": "p2", "response": "a"},
            {"prompt": "p2", "response": "a", "extra": 1}]
    src = write_jsonl(tmp_path / "raw.jsonl", rows)
    out = tmp_path / "out.jsonl"
    code, _, _ = cli("clean", src, "-o", out, "--dedup-on", "prompt", "--stats")
    assert code == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == [rows[0], rows[2]]
    assert cli("clean", src, "-o", out, "--dedup-on", "prompt,response")[0] == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows[:3]


def test_bad_near_dedup_options_are_refused(cli, tmp_path):
    src = write_jsonl(tmp_path / "raw.jsonl", [{"prompt": "p"}])
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--threshold", "0.8")
    assert code != 0 and "--threshold" in err
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--near-dedup", "--threshold", "1.5")
    assert code != 0 and "--threshold" in err
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--dedup-on", "nope")
    assert code != 0 and "nope" in err and "raw.jsonl: --dedup-on names the field 'nope', but no row of the file has it" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.jsonl"]


def test_token_stats_count_the_rows_written(cli, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # one token per word
    tok.save(str(tmp_path / "tokenizer.json"))
    words = [1, 2, 3, 4, 5, 6, 7, 8, 9, 30]
    rows = [{"q": " ".join(["w"] * n), "a": "x", "id": "not text"} for n in words] + [{"q": "", "a": ""}]
    src = write_jsonl(tmp_path / "raw.jsonl", rows)
    code, out, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--fields", "q,a", "--drop-empty",
                         "--token-stats", "--tokenizer", tmp_path / "tokenizer.json", "--cutoff", "10")
    assert code == 0, err
    counts = sorted(n + 1 for n in words)  # q's words and a's one
    assert f"min {counts[0]}  p50 {counts[4]}  p90 {counts[8]}  p99 {counts[9]}  max 31  (total {sum(counts)})" in out
    assert "2 row(s) with 10 or more tokens (20.0%)" in out
    code, _, err = cli("clean", src, "-o", tmp_path / "o.jsonl", "--token-stats")
    assert code != 0 and "--tokenizer" in err


def test_the_same_rows_are_dropped_with_any_number_of_worker_processes(tmp_path, monkeypatch):
    """The first pass's signatures come from this process alone, or from it and one or two workers taking chunks
    of the file: the rows dropped, the clusters and the output are the same."""
    from llf_recipes.data import clean_parallel
    from llf_recipes.data.clean import CleanOptions, clean

    rows, planted = planted_set(seed=12, distinct=600, planted=60, hard=20)
    src = write_jsonl(tmp_path / "raw.jsonl", rows)
    results = []
    for workers, chunk in ((0, 1 << 18), (1, 4096), (2, 1500)):
        monkeypatch.setattr(clean_parallel, "workers_for", lambda *a, n=workers, **k: n)
        monkeypatch.setattr(clean_parallel, "CHUNK_BYTES", chunk)
        out = tmp_path / f"out{workers}.jsonl"
        stats = clean(CleanOptions(input=src, output=out, near_dedup=0.8, fields=("prompt",)))
        results.append((out.read_bytes(), stats.near.dropped.tolist(), stats.near.kept_for.tolist(),
                        stats.near.examples, dict(stats.dropped)))
    assert results[0] == results[1] == results[2]
    dropped = set(results[0][1])
    assert len(dropped & planted) >= 0.95 * len(planted) and len(dropped - planted) <= 6, (len(dropped & planted),
                                                                                         dropped - planted)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_killed_runs_signatures_are_removed_by_the_next_run(cli, tmp_path):
    """The signatures' directory is named as the output's temporaries are: a run that was killed leaves it, the
    next run writing that output removes it (and the directory of a run still going is left alone)."""
    import os

    src = write_jsonl(tmp_path / "raw.jsonl", [{"prompt": "one row of text"}, {"prompt": "one row of text!"}])
    out = tmp_path / "out.jsonl"
    dead = 2**22 + 1  # Linux's pid_max is at most 2^22: no process has this pid
    stale = tmp_path / f".out.jsonl.{dead}.k3x9q.tmp"
    stale.mkdir()
    (stale / "band0").write_bytes(b"\0" * 64)
    alive = tmp_path / f".out.jsonl.{os.getpid()}.a1b2c.tmp"  # this process: still running
    alive.mkdir()
    code, _, err = cli("clean", src, "-o", out, "--near-dedup")
    assert code == 0, err
    assert not stale.exists() and alive.is_dir()
    assert "removed 1 temporary file(s)" in err
    assert len(out.read_text().splitlines()) == 1

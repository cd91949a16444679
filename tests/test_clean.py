import json
import math
import os
import random
import subprocess
import sys
from collections import Counter

import pytest
from conftest import run_cli_subprocess

SEED_PIPELINE = ("--drop-empty", "--fields", "input_text,target_text", "--rename", "input_text=prompt,target_text=response",
                 "--max-chars", "4096")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def only_inputs_left(directory, *names):
    """No output, no temporary sibling: the directory holds exactly what the test put there."""
    return sorted(p.name for p in directory.iterdir()) == sorted(names)


@pytest.fixture
def qa_rows():
    rng = random.Random(7)
    rows = []
    for i in range(300):
        answer = "答" * rng.randint(1, 60)
        if i % 17 == 0:
            answer = ""
        elif i % 23 == 0:
            answer = " \t\u3000"
        rows.append({"id": i, "input_text": "问" * rng.randint(1, 60), "target_text": answer})
    return rows


def test_seed_pipeline_matches_a_reference(cli, tmp_path, qa_rows):
    src = write_jsonl(tmp_path / "raw.jsonl", qa_rows + [{"id": 999, "input_text": "长" * 4000, "target_text": "答" * 96}])
    code, out, err = cli("clean", src, "-o", tmp_path / "out.jsonl", *SEED_PIPELINE)
    assert code == 0, err
    expected = [{"id": r["id"], "prompt": r["input_text"], "response": r["target_text"]} for r in qa_rows
                if r["input_text"].strip() and r["target_text"].strip()]
    assert read_jsonl(tmp_path / "out.jsonl") == expected  # the 4096-char row is gone, key order kept
    assert f"{len(expected)} rows" in out and "301 read" in out


def test_drop_empty_default_looks_at_every_string_field(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"a": "x", "b": "y", "n": None}, {"a": "x", "b": "  "}, {"a": "", "b": "y"}, {"a": "x", "b": "y", "k": 0},
    ])
    assert cli("clean", src, "-o", tmp_path / "out.jsonl", "--drop-empty")[0] == 0
    assert read_jsonl(tmp_path / "out.jsonl") == [{"a": "x", "b": "y", "n": None}, {"a": "x", "b": "y", "k": 0}]


def test_drop_empty_named_fields_catches_null_and_empty_lists(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"q": "x", "a": None}, {"q": "x", "a": []}, {"q": "x", "a": ["y"]}, {"q": "x", "a": "y", "other": ""},
    ])
    assert cli("clean", src, "-o", tmp_path / "out.jsonl", "--drop-empty", "--fields", "q,a")[0] == 0
    assert read_jsonl(tmp_path / "out.jsonl") == [{"q": "x", "a": ["y"]}, {"q": "x", "a": "y", "other": ""}]


def test_rows_left_unchanged_are_copied_byte_for_byte(cli, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"b": "\\u4e2d", "a": 1}\n\n{"b": "x",  "a": 2}')  # blank line, no final newline
    assert cli("clean", src, "-o", tmp_path / "out.jsonl", "--drop-empty")[0] == 0
    assert (tmp_path / "out.jsonl").read_bytes() == b'{"b": "\\u4e2d", "a": 1}\n{"b": "x",  "a": 2}\n'


def test_rename_keeps_other_fields_and_order(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "q": "x", "a": "y", "meta": {"k": [1]}}])
    assert cli("clean", src, "-o", tmp_path / "out.jsonl", "--rename", "q=prompt, a=response")[0] == 0
    [row] = read_jsonl(tmp_path / "out.jsonl")
    assert list(row.items()) == [("id", 1), ("prompt", "x"), ("response", "y"), ("meta", {"k": [1]})]


def test_rename_swap_is_allowed_but_overwriting_is_not(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"a": 1, "b": 2}])
    assert cli("clean", src, "-o", tmp_path / "out.jsonl", "--rename", "a=b,b=a")[0] == 0
    assert read_jsonl(tmp_path / "out.jsonl") == [{"b": 1, "a": 2}]
    code, _, err = cli("clean", src, "-o", tmp_path / "o2.jsonl", "--rename", "a=b")
    assert code == 2 and f"{src}:1" in err and "'b'" in err and "overwrite" in err
    assert not (tmp_path / "o2.jsonl").exists()


def test_max_chars_counts_the_text_fields_and_is_exclusive(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"q": "中" * 3, "a": "文" * 6, "note": "x" * 100},  # 9 over q,a
        {"q": "中" * 4, "a": "文" * 6},  # 10
        {"q": "中", "a": "文"},
    ])
    assert cli("clean", src, "-o", tmp_path / "out.jsonl", "--fields", "q,a", "--max-chars", "10")[0] == 0
    assert [len(r["q"] + r["a"]) for r in read_jsonl(tmp_path / "out.jsonl")] == [9, 2]
    assert cli("clean", src, "-o", tmp_path / "all.jsonl", "--max-chars", "10")[0] == 0  # every string field
    assert [len(r["q"] + r["a"]) for r in read_jsonl(tmp_path / "all.jsonl")] == [2]


@pytest.fixture
def word_tokenizer(tmp_path):
    """A tokenizer.json whose token count is the number of white-space separated words."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "tok" / "tokenizer.json"
    path.parent.mkdir()
    tok.save(str(path))
    return path


def test_max_tokens_with_a_tokenizer_json(cli, tmp_path, word_tokenizer):
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"q": "a b", "a": "c"}, {"q": "a b c", "a": "d"}, {"q": "a", "a": "b", "id": "not counted as text"},
    ])
    code, out, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--fields", "q,a", "--max-tokens", "4",
                         "--tokenizer", word_tokenizer, "--stats")
    assert code == 0, err
    assert read_jsonl(tmp_path / "out.jsonl") == [{"q": "a b", "a": "c"}, {"q": "a", "a": "b", "id": "not counted as text"}]
    assert "max_tokens" in out
    assert cli("clean", src, "-o", tmp_path / "s.jsonl", "--fields", "q,a", "--max-tokens", "4", "--tokenizer",
               word_tokenizer, "--sample", "5")[0] == 0  # only the lines a sample picks are tokenized
    assert (tmp_path / "s.jsonl").read_bytes() == (tmp_path / "out.jsonl").read_bytes()
    # a model directory holding tokenizer.json works too
    assert cli("clean", src, "-o", tmp_path / "o2.jsonl", "--max-tokens", "4", "--tokenizer", word_tokenizer.parent)[0] == 0


def test_max_tokens_needs_a_readable_tokenizer(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"q": "a"}])
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--max-tokens", "4")
    assert code == 2 and "--tokenizer" in err
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--max-tokens", "4", "--tokenizer", tmp_path / "nope.json")
    assert code == 2 and "nope.json does not exist" in err
    (tmp_path / "bad.json").write_text("{}")
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--max-tokens", "4", "--tokenizer", tmp_path / "bad.json")
    assert code == 2 and "bad.json is not a tokenizer.json" in err
    assert not (tmp_path / "out.jsonl").exists()


def test_dedup_ignores_key_order_and_keeps_the_first(cli, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"a": "x", "b": 1}\n{"b": 1, "a": "x"}\n{"a": "x", "b": 2}\n{"a":"x","b":1}\n{"a": "x", "b": 2}\n')
    code, out, _ = cli("clean", src, "-o", tmp_path / "out.jsonl", "--dedup", "--stats")
    assert code == 0
    assert read_jsonl(tmp_path / "out.jsonl") == [{"a": "x", "b": 1}, {"a": "x", "b": 2}]
    assert "duplicate" in out and "3" in out.split("duplicate")[1].splitlines()[0]


def test_sample_is_deterministic_uniform_and_in_input_order(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "t": f"row {i}"} for i in range(2000)])
    picks = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert cli("clean", src, "-o", tmp_path / f"{name}.jsonl", "--sample", "100", "--seed", seed)[0] == 0
        picks.append([r["id"] for r in read_jsonl(tmp_path / f"{name}.jsonl")])
    assert picks[0] == picks[1] and picks[0] != picks[2]
    assert len(picks[0]) == 100 and picks[0] == sorted(picks[0]) and len(set(picks[0])) == 100
    assert min(picks[0]) < 500 and max(picks[0]) >= 1500  # drawn from the whole file, not its head
    assert cli("clean", src, "-o", tmp_path / "all.jsonl", "--sample", "5000")[0] == 0
    assert len(read_jsonl(tmp_path / "all.jsonl")) == 2000


def test_sample_is_uniform_over_many_seeds(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i} for i in range(20)])
    counts = [0] * 20
    for seed in range(300):
        assert cli("clean", src, "-o", tmp_path / "out.jsonl", "--sample", "5", "--seed", seed)[0] == 0
        for row in read_jsonl(tmp_path / "out.jsonl"):
            counts[row["id"]] += 1
    assert all(40 <= c <= 110 for c in counts), counts  # 75 expected per row; early rows are not favoured


def test_sample_counts_only_rows_that_pass_the_filters(cli, tmp_path, qa_rows):
    src = write_jsonl(tmp_path / "raw.jsonl", qa_rows)
    code, out, _ = cli("clean", src, "-o", tmp_path / "out.jsonl", *SEED_PIPELINE, "--sample", "50", "--seed", "42", "--stats")
    assert code == 0
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert len(rows) == 50 and all(r["prompt"].strip() and r["response"].strip() for r in rows)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert "not_sampled" in out and "empty" in out


def test_stats_counts_and_lengths(cli, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"t": "ab"}\n{"t": ""}\n{"t": "abcd"}\n{"t": "abcdefgh"}\n{"t": "ab"}\nnot json\n')
    code, out, _ = cli("clean", src, "-o", tmp_path / "out.jsonl", "--drop-empty", "--max-chars", "8", "--dedup",
                       "--stats", "--skip-bad")
    assert code == 0
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert table["read"] == ["6"] and table["rejected"] == ["1"] and table["dropped"] == ["3"]
    assert table["empty"] == ["1"] and table["max_chars"] == ["1"] and table["duplicate"] == ["1"]
    assert table["written"] == ["2"]
    assert table["chars/row"] == ["min", "2", "mean", "3.0", "max", "4"]


def test_val_split_is_deterministic_and_partitions_the_rows(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "t": f"text {i}"} for i in range(2000)])
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 5)):
        code, out, _ = cli("clean", src, "-o", tmp_path / f"{name}-train.jsonl", "--val-ratio", "0.1",
                           "--val-out", tmp_path / f"{name}-val.jsonl", "--seed", seed)
        assert code == 0 and "val.jsonl" in out
        runs.append(([r["id"] for r in read_jsonl(tmp_path / f"{name}-train.jsonl")],
                     [r["id"] for r in read_jsonl(tmp_path / f"{name}-val.jsonl")]))
    train, val = runs[0]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert sorted(train + val) == list(range(2000)) and train == sorted(train) and val == sorted(val)
    assert 140 <= len(val) <= 260


def test_group_by_never_straddles(cli, tmp_path):
    rows = [{"conv": f"c{i % 97}", "turn": i} for i in range(1500)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    for seed in range(5):
        assert cli("clean", src, "-o", tmp_path / "train.jsonl", "--val-ratio", "0.3", "--val-out", tmp_path / "val.jsonl",
                   "--group-by", "conv", "--seed", seed)[0] == 0
        train = {r["conv"] for r in read_jsonl(tmp_path / "train.jsonl")}
        val = {r["conv"] for r in read_jsonl(tmp_path / "val.jsonl")}
        assert train and val and not train & val and len(train | val) == 97


def test_everything_at_once(cli, tmp_path, qa_rows):
    rows = qa_rows + qa_rows[:40]  # duplicates
    src = write_jsonl(tmp_path / "raw.jsonl", rows)
    argv = ("clean", src, "-o", tmp_path / "train.jsonl", *SEED_PIPELINE, "--dedup", "--sample", "120", "--seed", "3",
            "--val-ratio", "0.25", "--val-out", tmp_path / "val.jsonl", "--group-by", "id", "--stats")
    code, _, err = cli(*argv)
    assert code == 0, err
    first = (tmp_path / "train.jsonl").read_bytes(), (tmp_path / "val.jsonl").read_bytes()
    train, val = read_jsonl(tmp_path / "train.jsonl"), read_jsonl(tmp_path / "val.jsonl")
    assert len(train) + len(val) == 120 and val
    ids = [r["id"] for r in train + val]
    assert len(set(ids)) == 120  # no duplicate survived
    assert all(set(r) == {"id", "prompt", "response"} and r["response"].strip() for r in train + val)
    assert cli(*argv)[0] == 0
    assert ((tmp_path / "train.jsonl").read_bytes(), (tmp_path / "val.jsonl").read_bytes()) == first


BAD_INPUTS = {
    "invalid JSON": (b'{"q": "a"}\n{"q": "b",}\n', "in.jsonl:2", "invalid JSON"),
    "not an object": (b'{"q": "a"}\n{"q": "b"}\n["q", "c"]\n', "in.jsonl:3", "an array, not a JSON object"),
    "invalid UTF-8": (b'{"q": "a"}\n{"q": "\xe4\xb8"}\n', "in.jsonl:2", "invalid UTF-8"),
    "BOM": (b'\xef\xbb\xbf{"q": "a"}\n', "in.jsonl:1", "byte order mark"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_stops_with_the_line_and_writes_nothing(cli, tmp_path, case):
    data, where, reason = BAD_INPUTS[case]
    (tmp_path / "in.jsonl").write_bytes(data)
    code, _, err = cli("clean", tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl", "--val-ratio", "0.5",
                       "--val-out", tmp_path / "val.jsonl", "--drop-empty")
    assert code == 2 and where in err and reason in err and "--skip-bad" in err, err
    assert only_inputs_left(tmp_path, "in.jsonl")


@pytest.mark.parametrize("option, value, field", [
    ("--fields", "q,a", "a"), ("--rename", "q=prompt,a=response", "a"), ("--group-by", "conv", "conv"),
])
def test_missing_named_field_is_named(cli, tmp_path, option, value, field):
    src = write_jsonl(tmp_path / "in.jsonl", [{"q": "x", "a": "y", "conv": 1}] * 3 + [{"q": "x"}])
    extra = ("--val-ratio", "0.5", "--val-out", tmp_path / "val.jsonl") if option == "--group-by" else ()
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", option, value, *extra)
    assert code == 2 and f"in.jsonl:4: field '{field}' (named by {option}) is missing" in err, err
    assert only_inputs_left(tmp_path, "in.jsonl")


def test_fields_name_the_input_not_the_renamed_output(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"q": "x"}])
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--rename", "q=prompt", "--fields", "prompt")
    assert code == 2 and "field 'prompt'" in err and "before --rename" in err


@pytest.mark.parametrize("content, message", [(b"", "the file is empty"), (b"\n  \n\n", "has no rows")])
def test_empty_input_is_an_error_even_with_skip_bad(cli, tmp_path, content, message):
    (tmp_path / "in.jsonl").write_bytes(content)
    code, _, err = cli("clean", tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl", "--skip-bad")
    assert code == 2 and "in.jsonl" in err and message in err
    assert only_inputs_left(tmp_path, "in.jsonl")


def test_a_file_whose_every_line_is_bad_is_an_error_with_skip_bad_and_writes_nothing(cli, tmp_path):
    (tmp_path / "in.jsonl").write_bytes(b"{bad\n\nnot json\n[1]\n")
    code, _, err = cli("clean", tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl", "--skip-bad")
    assert code == 2 and "in.jsonl" in err and "all 3 of its non-blank lines are bad" in err, err
    assert only_inputs_left(tmp_path, "in.jsonl")


def test_missing_input_and_failed_run_keep_an_existing_output(cli, tmp_path):
    code, _, err = cli("clean", tmp_path / "nope.jsonl", "-o", tmp_path / "out.jsonl")
    assert code == 2 and "nope.jsonl does not exist" in err
    (tmp_path / "out.jsonl").write_text("previous\n")
    (tmp_path / "in.jsonl").write_text('{"a": 1}\n{oops}\n')
    assert cli("clean", tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl")[0] == 2
    assert (tmp_path / "out.jsonl").read_text() == "previous\n"
    assert only_inputs_left(tmp_path, "in.jsonl", "out.jsonl")


def test_skip_bad_sets_lines_aside_with_reasons(cli, tmp_path):
    (tmp_path / "in.jsonl").write_bytes(
        b'\xef\xbb\xbf{"q": "bom"}\n{"q": "ok", "a": "1"}\n{"q": "\xff"}\n[1]\n{"q": "no a"}\n{nope\n{"q": "ok2", "a": "2"}\n')
    code, out, err = cli("clean", tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl", "--fields", "q,a", "--skip-bad")
    assert code == 0, err
    assert read_jsonl(tmp_path / "out.jsonl") == [{"q": "ok", "a": "1"}, {"q": "ok2", "a": "2"}]
    assert "5 rejected" in out and "out.rejects.jsonl: 5 bad line(s)" in out
    rejects = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert [r["line"] for r in rejects] == [1, 3, 4, 5, 6]
    reasons = [r["reason"] for r in rejects]
    assert "byte order mark" in reasons[0] and "invalid UTF-8" in reasons[1] and "an array" in reasons[2]
    assert rejects[3]["field"] == "a" and "missing" in reasons[3] and reasons[4].startswith("invalid JSON")
    assert rejects[1]["text"] == '{"q": "\\xff"}' and rejects[4]["text"] == "{nope"


def test_a_pipe_is_refused_as_a_pipe_not_as_an_empty_file(cli, tmp_path):
    fifo = tmp_path / "rows.pipe"
    os.mkfifo(fifo)  # never opened: a writer would be needed, and clean stops before reading
    code, _, err = cli("clean", fifo, "-o", tmp_path / "out.jsonl")
    assert code == 2 and f"{fifo} is not a regular file" in err and "pipe" in err and "empty" not in err, err
    assert "save the rows to a file first" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.pipe"]


def test_skip_bad_with_no_bad_lines_writes_an_empty_rejects_file(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"q": "x"}])
    (tmp_path / "out.rejects.jsonl").write_text("stale\n")
    assert cli("clean", src, "-o", tmp_path / "out.jsonl", "--skip-bad")[0] == 0
    assert (tmp_path / "out.rejects.jsonl").read_text() == ""


@pytest.mark.parametrize("argv, message", [
    (("--val-ratio", "0.1"), "--val-ratio and --val-out go together"),
    (("--val-ratio", "1.5", "--val-out", "v.jsonl"), "between 0 and 1"),
    (("--group-by", "id"), "needs --val-ratio"),
    (("--rename", "a"), "is not OLD=NEW"),
    (("--rename", "a=x,b=x"), "the same new name"),
    (("--sample", "0"), "--sample must be positive"),
    (("--fields", ","), "--fields names no field"),
])
def test_option_errors(cli, tmp_path, argv, message):
    src = write_jsonl(tmp_path / "in.jsonl", [{"a": "x", "b": "y", "id": 1}])
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", *argv)
    assert code == 2 and message in err, err
    assert not (tmp_path / "out.jsonl").exists()


def test_output_cannot_replace_the_input(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"a": "x"}])
    code, _, err = cli("clean", src, "-o", src)
    assert code == 2 and "replace the input" in err
    assert read_jsonl(src) == [{"a": "x"}]


def test_clean_does_not_import_torch(tmp_path, word_tokenizer):
    poison = tmp_path / "poison"
    for mod in ("torch", "transformers", "llamafactory"):
        (poison / mod).mkdir(parents=True)
        (poison / mod / "__init__.py").write_text(f"raise ImportError('{mod} imported by clean')\n")
    src = write_jsonl(tmp_path / "in.jsonl", [{"q": "a b", "a": "c"}])
    env = {"PYTHONPATH": os.pathsep.join([str(poison), os.environ.get("PYTHONPATH", "")])}
    proc = run_cli_subprocess("clean", src, "-o", tmp_path / "out.jsonl", "--max-tokens", "8", "--tokenizer", word_tokenizer,
                              "--dedup", "--sample", "1", "--stats", env=env)
    assert proc.returncode == 0, proc.stderr
    assert read_jsonl(tmp_path / "out.jsonl") == [{"q": "a b", "a": "c"}]


def mixed_rows(n, passing, seed=11):
    """Rows with unique ids: about a fraction `passing` has an answer, some are over 4096 characters, blank lines
    between some."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        answer = "答" * rng.randint(1, 80) if rng.random() < passing else ""
        if i % 97 == 5:
            answer = "长" * 5000
        lines.append(json.dumps({"id": i, "input_text": f"问{i}", "target_text": answer}, ensure_ascii=False))
        if i % 251 == 7:
            lines.append("  ")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("rows, passing, size", [
    (3000, 0.95, 100),  # most rows pass: one pass over the lines below the cap
    (3000, 0.3, 120),  # too few pass below the cap: a second pass takes the rest
    (3000, 0.3, 2000),  # fewer pass than asked for: all of them
])
def test_sample_picks_the_same_rows_whether_or_not_every_line_is_parsed(cli, tmp_path, rows, passing, size):
    src = tmp_path / "raw.jsonl"
    src.write_text(mixed_rows(rows, passing), encoding="utf-8")
    passing = [r for r in map(json.loads, filter(str.strip, src.read_text(encoding="utf-8").splitlines()))
               if r["target_text"] and len(r["input_text"] + r["target_text"]) < 4096]
    for seed in (0, 1, 2):
        base = ("clean", src, *SEED_PIPELINE, "--sample", size, "--seed", seed)
        code, out, err = cli(*base, "-o", tmp_path / "fast.jsonl")
        assert code == 0, err
        parsed = int(out.split(" lines (")[1].split()[0])
        if size < len(passing) / 2:
            assert parsed < rows / 2, out  # most lines were passed over unparsed
        fast = (tmp_path / "fast.jsonl").read_bytes()
        for every_line in ("--stats", "--skip-bad", "--dedup"):  # each of these parses every line
            assert cli(*base, every_line, "-o", tmp_path / "all.jsonl")[0] == 0
            assert (tmp_path / "all.jsonl").read_bytes() == fast, (seed, every_line)
        ids = [r["id"] for r in read_jsonl(tmp_path / "fast.jsonl")]
        assert len(ids) == min(size, len(passing)) and ids == sorted(ids)
        assert set(ids) <= {r["id"] for r in passing}


def test_sample_is_uniform_over_the_rows_that_pass_across_one_or_two_passes(tmp_path):
    from llf_recipes.data.clean import CleanOptions, Sample, clean, first_cap

    # 240 lines, a third pass: the lines below the cap hold about 20 passing rows for a sample of 16, so some seeds
    # need the second pass and some do not
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "t": "x" if i % 3 == 0 else ""} for i in range(240)])
    size, seeds = 16, range(500)
    cap = first_cap(src.read_bytes(), src.stat().st_size, size)
    assert cap < 1
    counts = Counter()
    second_pass = 0
    for seed in seeds:
        clean(CleanOptions(input=src, output=tmp_path / "out.jsonl", drop_empty=True, sample=size, seed=seed))
        ids = [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")]
        assert len(ids) == size == len(set(ids))
        counts.update(ids)
        first = Sample(size, seed, cap)  # replay the first pass alone: is this seed's sample short there?
        while first.next_line <= 240:
            i = first.next_line - 1
            first.offer(first.next_line, i if i % 3 == 0 else None)
        second_pass += first.short
    assert 50 <= second_pass <= 450, second_pass
    assert set(counts) <= set(range(0, 240, 3))  # no row that fails the filter
    expected = len(seeds) * size / 80
    assert all(abs(counts[i] - expected) < 5 * math.sqrt(expected) for i in range(0, 240, 3)), counts
    chi2 = sum((counts[i] - expected) ** 2 / expected for i in range(0, 240, 3))
    assert chi2 < 130, chi2  # 79 degrees of freedom: above 130 with probability under 0.0003


def test_sample_reads_only_some_lines_and_says_so(cli, tmp_path):
    lines = [json.dumps({"id": i, "t": "x"}) for i in range(5000)]
    lines[2500] = '{"id": 2500, "t": "x",}'  # a bad line in the middle
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--sample", "50", "--stats")
    assert code == 2 and "in.jsonl:2501: invalid JSON" in err  # --stats checks every line
    outcomes = []
    for seed in range(10):
        code, out, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--sample", "50", "--seed", seed)
        if code == 0:
            parsed = int(out.split(" lines (")[1].split()[0])
            assert "50 rows sampled from 5000 lines" in out and parsed < 500 and "--stats checks every line" in out
        else:  # the sample looked at the bad line
            assert "in.jsonl:2501: invalid JSON" in err
        outcomes.append(code)
    assert outcomes.count(0) >= 5, outcomes


def test_sample_checks_the_first_line(cli, tmp_path):
    src = tmp_path / "in.json"
    src.write_text("{'id': 0}\n" + "".join(json.dumps({"id": i}) + "\n" for i in range(1, 3000)))  # line 1 is not JSON
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--sample", "10")
    assert code == 2 and "in.json:1: invalid JSON" in err, err
    assert only_inputs_left(tmp_path, "in.json")


def test_only_blank_lines_around_a_few_rows_are_found_by_a_sample(cli, tmp_path):
    # the first pass's lines are likely all blank here: the second pass still finds the rows
    src = tmp_path / "in.jsonl"
    src.write_text("\n" * 20000 + '{"id": 1}\n' + "\n" * 20000 + '{"id": 2}\n')
    assert cli("clean", src, "-o", tmp_path / "out.jsonl", "--sample", "5")[0] == 0
    assert read_jsonl(tmp_path / "out.jsonl") == [{"id": 1}, {"id": 2}]


def test_clean_does_not_load_the_recipe_catalog(tmp_path):
    # start-up is a sizeable part of a sampling run: the catalog (YAML, Jinja, the schema) is not needed
    src = write_jsonl(tmp_path / "in.jsonl", [{"q": "a"}])
    code = ("import sys; from llf_recipes.cli import main; main(['clean', sys.argv[1], '-o', sys.argv[2], '--sample', "
            "'1']); print(sorted(m for m in sys.modules if m.split('.')[0] in ('yaml', 'jinja2') or "
            "m in ('llf_recipes.catalog', 'llf_recipes.recipe', 'hashlib')))")
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "out.jsonl")], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


ALPACA_ROWS = [{"instruction": f"Name a colour number {i}.", "input": "" if i % 3 else "in English",
                "output": f"Colour {i}."} for i in range(30)]


@pytest.mark.parametrize("options, option, name", [
    (("--fields", "instrution,output"), "--fields", "instrution"),
    (("--rename", "nosuch=prompt"), "--rename", "nosuch"),
    (("--dedup-on", "promt"), "--dedup-on", "promt"),
    (("--val-ratio", "0.5", "--val-out", "VAL", "--group-by", "conversation"), "--group-by", "conversation"),
])
@pytest.mark.parametrize("skip_bad", [False, True])
def test_a_field_no_row_has_is_a_usage_error(cli, tmp_path, options, option, name, skip_bad):
    """Even with --skip-bad (which would set every row aside and write an empty file), and nothing is written."""
    src = write_jsonl(tmp_path / "in.jsonl", ALPACA_ROWS)
    options = [str(tmp_path / "val.jsonl") if o == "VAL" else o for o in options]
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", *options, *(["--skip-bad"] if skip_bad else []))
    assert code == 2 and f"{option} names the field {name!r}, but no row of the file has it" in err, err
    assert "the rows have input, instruction, output" in err
    assert only_inputs_left(tmp_path, "in.jsonl")


def test_a_field_absent_from_the_first_thousand_rows_is_refused(cli, tmp_path):
    """In a large file only the first 1000 rows are looked at before the pass: a field every row needs that none of
    them has is refused there, with a suggestion; a field some of them have goes to the pass (rows lacking it are bad)."""
    rows = [{"prompt": f"p{i}", "answer": f"a{i}"} for i in range(1500)]
    rows[1200]["response"] = "late"
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--fields", "response", "--skip-bad")
    assert code == 2 and "none of the first 1000 rows has it" in err, err
    assert only_inputs_left(tmp_path, "in.jsonl")
    rows[999]["response"] = "there"
    write_jsonl(src, rows)
    code, out, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--fields", "response", "--skip-bad")
    assert code == 0 and "2 rows (1500 read, 0 dropped, 1498 rejected)" in out, out + err


def test_a_file_of_no_json_objects_is_looked_at_for_a_bounded_number_of_lines(cli, tmp_path):
    """Before the pass only the first FIRST_ROWS lines are looked at for the named fields, rows or not: a CSV given
    to clean is not read to its end before the pass stops at its first line."""
    import io

    from llf_recipes.data.clean_check import FIRST_ROWS, CleanOptions, CleanStats, first_rows

    src = tmp_path / "in.csv"
    src.write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(50_000)))

    class Counted(io.BufferedReader):
        lines = 0

        def __next__(self):
            Counted.lines += 1
            return super().__next__()

    with Counted(io.FileIO(src)) as fh:
        first_rows(fh, CleanOptions(input=src, output=tmp_path / "out.jsonl", fields=("text",)), CleanStats(), str(src))
        assert fh.tell() == 0
    assert Counted.lines == FIRST_ROWS
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--fields", "text")
    assert code != 0 and "in.csv:1:" in err, err
    assert only_inputs_left(tmp_path, "in.csv")


def test_drop_empty_without_fields_names_the_fields_that_emptied_rows(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ALPACA_ROWS)
    code, out, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--drop-empty")
    assert code == 0 and "10 rows (30 read, 20 dropped" in out, out
    assert "warning: --drop-empty without --fields dropped 20 row(s)" in err and "'input' (20)" in err, err
    assert "--fields instruction,output" in err
    code, out, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--drop-empty", "--fields", "instruction,output")
    assert code == 0 and "30 rows (30 read, 0 dropped" in out and "warning" not in err, out + err


def test_a_line_cut_short_is_named_at_its_end_and_blank_lines_are_counted(cli, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"q": "a", "r": "b"}\n\n{"q": "cut", "r": \n{"q": "c", "r": "d"}\n', encoding="utf-8")
    code, _, err = cli("clean", src, "-o", tmp_path / "out.jsonl")
    assert code == 2 and "in.jsonl:3: invalid JSON at the end of the line (column 19; is it cut short?)" in err, err
    code, out, err = cli("clean", src, "-o", tmp_path / "out.jsonl", "--skip-bad")
    assert code == 0 and "2 rows (3 read, 0 dropped, 1 rejected, 1 blank line(s) of 4)" in out, out + err

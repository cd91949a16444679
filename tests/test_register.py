import json
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_cli_subprocess


def info(d):
    return json.loads((d / "dataset_info.json").read_text(encoding="utf-8"))


def test_register_creates_file_and_keeps_other_entries(cli, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(json.dumps({"theirs": {"file_name": "t.json"}}), encoding="utf-8")
    code, out, _ = cli("register", "huanhuan", "zhihu_rlhf", "--data-dir", data)
    assert code == 0 and "added: huanhuan" in out
    got = info(data)
    assert got["theirs"] == {"file_name": "t.json"}
    assert got["zhihu_rlhf"]["ranking"] is True and got["zhihu_rlhf"]["columns"]["chosen"] == "chosen"
    assert json.loads((data / "dataset_info.json.bak").read_text())["theirs"] == {"file_name": "t.json"}


def test_register_user_file_complete_columns_and_paths(cli, tmp_path):
    data = tmp_path / "data"
    own = tmp_path / "elsewhere" / "qa.jsonl"
    own.parent.mkdir()
    own.write_text('{"question": "q", "answer": "a"}\n', encoding="utf-8")
    inside = data / "in.jsonl"
    data.mkdir()
    inside.write_text('{"instruction": "q", "output": "a", "label": true}\n', encoding="utf-8")
    code, _, err = cli("register", "--file", own, "--name", "qa", "--stage", "sft", "--columns",
                       "prompt=question,response=answer", "--data-dir", data)
    assert code == 0 and f"file_name is the absolute path {own.resolve()}" in err, err
    code, _, err = cli("register", "--file", inside, "--name", "k", "--stage", "kto", "--data-dir", data)
    assert code == 0 and "absolute" not in err, err
    got = info(data)
    assert got["qa"]["file_name"] == str(own.resolve())  # outside the data dir: absolute
    assert got["qa"]["columns"] == {"prompt": "question", "response": "answer"}  # no input field, so no query
    assert got["k"]["file_name"] == "in.jsonl" and got["k"]["columns"]["kto_tag"] == "label" and got["k"]["ranking"] is False


def test_conflicting_definition_needs_force(cli, tmp_path):
    f, g = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    f.write_text('{"instruction": "q", "output": "a"}\n')
    g.write_text('{"instruction": "q", "chosen": "a", "rejected": "b"}\n')
    cli("register", "--file", f, "--name", "x", "--stage", "sft", "--data-dir", tmp_path)
    before = (tmp_path / "dataset_info.json").read_bytes()
    code, _, err = cli("register", "--file", g, "--name", "x", "--stage", "dpo", "--data-dir", tmp_path)
    assert code == 2 and "'x' is already registered" in err and "--force" in err
    assert (tmp_path / "dataset_info.json").read_bytes() == before
    assert cli("register", "--file", g, "--name", "x", "--stage", "dpo", "--data-dir", tmp_path, "--force")[0] == 0
    assert info(tmp_path)["x"]["ranking"] is True


def test_dry_run_writes_nothing(cli, tmp_path):
    code, out, _ = cli("register", "huanhuan", "--data-dir", tmp_path, "--dry-run")
    assert code == 0 and "would be added: huanhuan" in out and '"file_name": "huanhuan.jsonl"' in out
    assert not (tmp_path / "dataset_info.json").exists()


@pytest.mark.parametrize("content, words", [
    (b'{"a": {"file_name": "x"},\n  "b": }\n', "dataset_info.json:2:"),
    (b'\xef\xbb\xbf{"a": {}}', "byte-order mark"),
    (b'{"a": "\xff"}', "not valid UTF-8"),
    (b'[1, 2]', "JSON object"),
])
def test_broken_dataset_info_is_never_overwritten(cli, tmp_path, content, words):
    (tmp_path / "dataset_info.json").write_bytes(content)
    code, _, err = cli("register", "huanhuan", "--data-dir", tmp_path)
    assert code == 2 and words in err
    assert (tmp_path / "dataset_info.json").read_bytes() == content


def test_typo_in_columns_and_missing_file(cli, tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text("{}\n")
    code, _, err = cli("register", "--file", f, "--name", "x", "--stage", "sft", "--columns", "promt=q", "--data-dir", tmp_path)
    assert code == 2 and "'promt'" in err and "'prompt'" in err
    code, _, err = cli("register", "--file", tmp_path / "nope.jsonl", "--name", "x", "--stage", "sft", "--data-dir", tmp_path)
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "dataset_info.json").exists()


def _register_proc(i, data, sample):
    return subprocess.Popen(
        [sys.executable, "-m", "llf_recipes", "register", "--file", str(sample), "--name", f"ds_{i:02d}", "--stage", "sft",
         "--data-dir", str(data)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sixteen_concurrent_registers_all_land(tmp_path):
    sample = tmp_path / "s.jsonl"
    sample.write_text('{"instruction": "q", "output": "a"}\n')
    procs = [_register_proc(i, tmp_path, sample) for i in range(16)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    assert sorted(info(tmp_path)) == [f"ds_{i:02d}" for i in range(16)]


def test_sigkill_never_leaves_a_broken_file(tmp_path):
    sample = tmp_path / "s.jsonl"
    sample.write_text('{"instruction": "q", "output": "a"}\n')
    rng = random.Random(7)
    for i in range(12):
        p = _register_proc(i, tmp_path, sample)
        time.sleep(rng.uniform(0.0, 0.35))
        p.send_signal(signal.SIGKILL)
        p.wait()
        path = tmp_path / "dataset_info.json"
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))  # always whole, valid JSON
            assert all(k.startswith("ds_") for k in data)
    # whatever was killed, a later register still works and keeps what landed
    landed = set(info(tmp_path)) if (tmp_path / "dataset_info.json").exists() else set()
    assert run_cli_subprocess("register", "--file", sample, "--name", "final", "--stage", "sft", "--data-dir", tmp_path).returncode == 0
    assert set(info(tmp_path)) == landed | {"final"}


def test_an_entry_that_means_the_same_is_unchanged(cli, tmp_path):
    """LLaMA-Factory's defaults written out or left out: the same definition, kept as the user wrote it."""
    f = tmp_path / "chats.json"
    f.write_text(json.dumps([{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}]))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"chats": {
        "file_name": "chats.json", "formatting": "sharegpt", "columns": {"messages": "conversations"}}}))
    before = (tmp_path / "dataset_info.json").read_bytes()
    code, out, _ = cli("register", "--file", f, "--name", "chats", "--stage", "sft", "--data-dir", tmp_path)
    assert code == 0 and "unchanged: chats" in out
    assert (tmp_path / "dataset_info.json").read_bytes() == before
    (tmp_path / "dataset_info.json").write_text(json.dumps({"chats": {"file_name": "chats.json", "formatting": "sharegpt",
                                                                      "ranking": True}}))
    code, _, err = cli("register", "--file", f, "--name", "chats", "--stage", "sft", "--data-dir", tmp_path)
    assert code == 2 and "different definition" in err


def test_register_reads_media_from_media_dir(cli, tmp_path):
    """Images whose paths are relative to a folder other than the data dir: --media-dir, as `check` and LLaMA-Factory's
    media_dir take it; without it the error names each missing file once and suggests the option."""
    import shutil

    layouts = ROOT / "tests" / "data" / "layouts"
    shutil.copytree(layouts / "media", tmp_path / "shared" / "media")
    rows = [{"messages": [{"role": "user", "content": "<image><image>Same picture?"},
                          {"role": "assistant", "content": "Yes."}], "images": ["media/dot.png", "media/dot.png"]},
            {"messages": [{"role": "user", "content": "<image>Shape?"}, {"role": "assistant", "content": "Square."}],
             "images": ["media/square.png"]}]
    src = tmp_path / "shared" / "pics.json"
    src.write_text(json.dumps(rows), encoding="utf-8")
    data = tmp_path / "data"
    data.mkdir()
    code, _, err = cli("register", "--file", src, "--name", "pics", "--stage", "sft", "--data-dir", data)
    assert code == 2 and "2 of 2 row(s) do not read" in err and "--media-dir DIR" in err, err
    first = next(line for line in err.splitlines() if "pics.json:" in line and "(row 1)" in line and "media/dot.png" in line)
    assert first.count("'media/dot.png' is not there") == 1, first
    assert not (data / "dataset_info.json").exists()
    code, out, err = cli("register", "--file", src, "--name", "pics", "--stage", "sft", "--data-dir", data,
                         "--media-dir", tmp_path / "shared")
    assert code == 0 and "2 of 2 row(s) usable" in out and f"media_dir: {tmp_path / 'shared'}" in err, out + err
    assert info(data)["pics"]["columns"]["images"] == "images"
    code, _, err = cli("register", "--file", src, "--name", "pics", "--stage", "sft", "--data-dir", data,
                       "--media-dir", tmp_path / "nodir")
    assert code == 2 and "the media folder" in err and "nodir does not exist" in err


@pytest.mark.engine
def test_llamafactory_finds_the_media_where_register_checked_them(cli, tmp_path):
    import shutil

    from llf_loader import aligned_rows

    shutil.copytree(ROOT / "tests" / "data" / "layouts" / "media", tmp_path / "shared" / "media")
    src = tmp_path / "shared" / "pics.json"
    src.write_text(json.dumps([{"messages": [{"role": "user", "content": "<image>Shape?"},
                                             {"role": "assistant", "content": "Square."}],
                                "images": ["media/square.png"]}]), encoding="utf-8")
    data = tmp_path / "data"
    data.mkdir()
    assert cli("register", "--file", src, "--name", "pics", "--stage", "sft", "--data-dir", data,
               "--media-dir", tmp_path / "shared")[0] == 0
    got = aligned_rows(data, "pics", "sft", tmp_path / "w", media_dir=str(tmp_path / "shared"))
    assert [row["_images"] for row in got] == [[str(tmp_path / "shared" / "media" / "square.png")]]


@pytest.mark.engine
def test_skip_bad_registers_a_file_whose_dropped_rows_llamafactory_skips(cli, tmp_path):
    """Two of five rows in a turn order LLaMA-Factory drops: refused by default (nothing written) with --skip-bad as
    the way out; with it the entry is written, the rows are named, and LLaMA-Factory's converter keeps the other three."""
    from llf_loader import aligned_rows

    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(5)]
    rows[1]["messages"].reverse()
    rows[3]["messages"].insert(0, {"role": "user", "content": "again"})
    data = tmp_path / "data"
    data.mkdir()
    src = data / "five.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, _, err = cli("register", "--file", src, "--name", "five", "--stage", "sft", "--data-dir", data)
    assert code == 2 and "2 of 5 row(s) do not read" in err and "--skip-bad" in err, err
    assert not (data / "dataset_info.json").exists()
    code, out, err = cli("register", "--file", src, "--name", "five", "--stage", "sft", "--data-dir", data, "--skip-bad")
    assert code == 0 and "3 of 5 row(s) usable" in out and "added: five" in out, out + err
    assert "2 row(s) stay in the file" in err and "five.jsonl:2" in err and "five.jsonl:4" in err, err
    assert info(data)["five"]["file_name"] == "five.jsonl"
    kept = [r for r in aligned_rows(data, "five", "sft", tmp_path / "w") if r["_prompt"]]
    assert [r["_prompt"][-1]["content"] for r in kept] == ["q0", "q2", "q4"]


def test_skip_bad_never_registers_rows_llamafactory_stops_on(cli, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n" + json.dumps({"instruction": 3, "output": "a"})
                   + "\n", encoding="utf-8")
    code, _, err = cli("register", "--file", src, "--name", "bad", "--stage", "sft", "--data-dir", tmp_path, "--skip-bad")
    assert code == 2 and "bad.jsonl:2" in err and "nothing was registered" in err, err
    assert not (tmp_path / "dataset_info.json").exists()

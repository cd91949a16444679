"""Bad data given to `register --file` and `check`: one clear error naming the file, the line and the field, a non-zero
exit, and dataset_info.json left exactly as it was."""

import json

import pytest

LAYOUTS = __import__("pathlib").Path(__file__).parent / "data" / "layouts"
SFT = '{"instruction": "a", "output": "b"}\n'
TURNS = '{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}\n'

# file name, bytes, stage, extra options, words the error must hold (file:line first)
CASES = [
    ("bad.json", b'[{"instruction": "a", "output": "b"},\n {"instruction": "c", "output": }\n]', "sft", [],
     ["bad.json:2", "invalid JSON"]),
    ("bad.jsonl", (SFT + '{"instruction": "c", oops}\n').encode(), "sft", [], ["bad.jsonl:2", "invalid JSON"]),
    ("utf.jsonl", SFT.encode() + b'{"instruction": "\xff", "output": "b"}\n', "sft", [], ["utf.jsonl:2", "UTF-8"]),
    ("one.json", b'{"instruction": "a", "output": "b", "extra": {"x": 1},\n "more": 2}', "sft", [],
     ["one.json", "array of objects"]),
    ("empty.jsonl", b"", "sft", [], ["empty.jsonl", "is empty"]),
    ("t.txt", b"some text\nmore text\n", "sft", [], ["t.txt", "stage pt", "--stage"]),
    ("qa.jsonl", b'{"q": "a", "a": "b"}\n', "sft", ["--columns", "prompt=question,response=a"],
     ["qa.jsonl", "'question'", "fields: a, q"]),
    ("typ.jsonl", (SFT + '{"instruction": "c", "output": 3}\n').encode(), "sft", [], ["typ.jsonl:2", "'output'", "number"]),
    ("odd.jsonl", (TURNS + '{"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]}\n').encode(),
     "sft", [], ["odd.jsonl:2", "'conversations'", "role 'gpt'"]),
    ("twice.jsonl", (TURNS + '{"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}\n').encode(),
     "sft", [], ["twice.jsonl:2", "'conversations'", "role 'human'"]),
    ("count.jsonl", (TURNS + '{"conversations": [{"from": "human", "value": "a"}]}\n').encode(), "sft", [],
     ["count.jsonl:2", "'conversations'", "1 turn(s)"]),
    ("keys.jsonl", (TURNS + '{"conversations": [{"role": "user", "content": "a"}]}\n').encode(), "sft", [],
     ["keys.jsonl:2", "'conversations'", "no 'from'/'value' keys"]),
    ("content.jsonl", (TURNS + '{"conversations": [{"from": "human", "value": ["a"]}, {"from": "gpt", "value": "b"}]}\n').encode(),
     "sft", [], ["content.jsonl:2", "'conversations'", "must be text"]),
    ("pairs.jsonl", SFT.encode(), "dpo", [], ["pairs.jsonl", "chosen", "stage dpo needs preference pairs"]),
    ("kto.jsonl", SFT.encode(), "kto", [], ["kto.jsonl", "kto_tag", "true/false"]),
    ("p.parquet", b"PAR1 not really parquet", "sft", [], ["p.parquet", "cannot read it as parquet"]),
    ("p.arrow", b"not arrow", "sft", [], ["p.arrow", "cannot read it as arrow"]),
    ("c.csv", b'instruction,output\n"a,b\n', "sft", [], ["c.csv:2", "cannot read it as CSV"]),
    ("wide.csv", b"instruction,output\na,b\nc,d,e\n", "sft", [], ["wide.csv:3", "more field(s) than the header"]),
    ("img.json", json.dumps([{"messages": [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "b"}],
                              "images": ["media/none.png"]}]).encode(), "sft", [], ["img.json:1", "'images'", "none.png"]),
    ("tags.jsonl", TURNS.encode(), "sft", ["--tags", "rol_tag=role"], ["'rol_tag'", "'role_tag'"]),
    ("hist.jsonl", b'{"instruction": "a", "output": "b", "history": [["only one"]]}\n', "sft", [],
     ["hist.jsonl:1", "'history'", "pair"]),
]


@pytest.mark.parametrize("name, content, stage, extra, words", CASES, ids=[c[0] for c in CASES])
def test_register_refuses_with_file_line_field(cli, tmp_path, name, content, stage, extra, words):
    data = tmp_path / "data"
    data.mkdir()
    before = json.dumps({"kept": {"file_name": "kept.jsonl"}}).encode()
    (data / "dataset_info.json").write_bytes(before)
    src = data / name
    src.write_bytes(content)
    code, out, err = cli("register", "--file", src, "--name", "new", "--stage", stage, "--data-dir", data, *extra)
    assert code == 2, (out, err)
    first = err.splitlines()[0]
    assert first.startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    assert (data / "dataset_info.json").read_bytes() == before
    assert sorted(p.name for p in data.iterdir()) == sorted(["dataset_info.json", name])  # no temporary file either


def test_check_reports_the_same_problems(cli, tmp_path):
    (tmp_path / "odd.jsonl").write_text(TURNS + '{"conversations": [{"from": "gpt", "value": "a"}]}\n' + TURNS)
    code, out, _ = cli("check", tmp_path / "odd.jsonl", "--stage", "sft")
    assert code == 1 and "3 row(s), 2 usable for stage sft, 1 dropped by LLaMA-Factory" in out
    assert "odd.jsonl:2: LLaMA-Factory drops it: message 0 has role 'gpt'" in out
    (tmp_path / "p.parquet").write_bytes(b"PAR1 broken")
    code, _, err = cli("check", tmp_path / "p.parquet", "--stage", "sft")
    assert code == 2 and "p.parquet" in err and "Traceback" not in err


def test_check_names_the_layout_a_file_is_in(cli, tmp_path):
    """An entry that says alpaca for a sharegpt file: the error says what the file looks like and what to run."""
    (tmp_path / "chats.jsonl").write_text(TURNS)
    (tmp_path / "dataset_info.json").write_text(json.dumps({"chats": {"file_name": "chats.jsonl"}}))
    code, _, err = cli("check", "chats", "--stage", "sft", "--data-dir", tmp_path)
    assert code == 2 and "prompt -> 'instruction'" in err and "looks like sharegpt (from/value)" in err
    assert "llf-recipes register --file" in err and "--stage sft --force" in err


def test_the_register_fix_check_suggests_works(cli, tmp_path):
    """check's hint to re-register a file is given only when that command then succeeds; data no entry can make fit
    the stage (no kto label for kto, kto labels for sft) gets what to do instead."""
    (tmp_path / "chats.jsonl").write_text(TURNS * 2)
    (tmp_path / "qa.jsonl").write_text(SFT * 2)
    (tmp_path / "labelled.jsonl").write_text(json.dumps({"instruction": "a", "output": "b", "label": True}) + "\n"
                                             + json.dumps({"instruction": "a", "output": "c", "label": False}) + "\n")
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "chats": {"file_name": "chats.jsonl", "columns": {"prompt": "conversations", "response": "conversations"}},
        "qa": {"file_name": "qa.jsonl"},
        "labelled": {"file_name": "labelled.jsonl", "columns": {"prompt": "instruction", "response": "output",
                                                                "kto_tag": "label"}}}))
    checked = {}
    for name, stage in [("chats", "sft"), ("qa", "kto"), ("labelled", "sft")]:
        code, out, err = cli("check", name, "--stage", stage, "--data-dir", tmp_path)
        checked[name] = out + err
        assert code in (1, 2) and "Traceback" not in err, out + err
    hint = checked["chats"]
    assert "--force" in hint, hint
    code, out, err = cli("register", "--file", tmp_path / "chats.jsonl", "--name", "chats", "--stage", "sft",
                         "--data-dir", tmp_path, "--force")
    assert code == 0 and "2 of 2 row(s) usable" in out, err
    assert cli("check", "chats", "--stage", "sft", "--data-dir", tmp_path)[0] == 0
    assert "--force" not in checked["qa"] and "needs a kto_tag column" in checked["qa"], checked["qa"]
    code, _, err = cli("register", "--file", tmp_path / "qa.jsonl", "--name", "qa", "--stage", "kto", "--data-dir",
                       tmp_path, "--force")
    assert code == 2 and "kto_tag" in err  # what the old hint led to
    assert "--force" not in checked["labelled"] and "undesirable answers" in checked["labelled"], checked["labelled"]


def test_missing_media_resolves_like_llamafactory(cli, tmp_path):
    """Media paths resolve against the data dir (LLaMA-Factory's media_dir), then the working folder."""
    import shutil

    shutil.copytree(LAYOUTS / "media", tmp_path / "data" / "media")
    shutil.copy(LAYOUTS / "images_sft.json", tmp_path / "images.json")  # outside the data dir: media/ is not beside it
    code, _, err = cli("register", "--file", tmp_path / "images.json", "--name", "img", "--stage", "sft",
                         "--data-dir", tmp_path / "data")
    assert code == 0, err
    code, _, err = cli("register", "--file", tmp_path / "images.json", "--name", "img2", "--stage", "sft",
                       "--data-dir", tmp_path / "elsewhere")
    assert code == 2 and "image file 'media/dot.png' is not there" in err
    assert not (tmp_path / "elsewhere" / "dataset_info.json").exists()


@pytest.mark.parametrize("change, words", [
    ({"formatting": "sharegpt"}, ["huanhuan.jsonl", "maps no messages column"]),
    ({"ranking": True}, ["'huanhuan' is ranked", "stage sft"]),  # validation says so first
    ({"columns": {"prompt": "question", "response": "output"}}, ["'question'", "looks like alpaca"]),
    ({"file_name": "gone.jsonl"}, ["its file", "gone.jsonl is missing"]),
])
def test_run_checks_the_data_before_launch(tmp_path, change, words):
    """`run` reads each dataset entry as LLaMA-Factory will, before anything starts (print launcher: nothing trains)."""
    from conftest import run_cli_subprocess

    data = tmp_path / "data"
    assert run_cli_subprocess("convert", "huanhuan", "--sample", "--data-dir", data).returncode == 0
    assert run_cli_subprocess("register", "huanhuan", "--data-dir", data).returncode == 0
    info = json.loads((data / "dataset_info.json").read_text())
    ok = run_cli_subprocess("run", "sft-huanhuan", "--launcher", "print", "--output-root", tmp_path / "saves", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    info["huanhuan"].update(change)
    (data / "dataset_info.json").write_text(json.dumps(info))
    proc = run_cli_subprocess("run", "sft-huanhuan", "--launcher", "print", "--output-root", tmp_path / "saves2", cwd=tmp_path)
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)
    assert not (tmp_path / "saves2").exists()


@pytest.mark.parametrize("verb", [["register", "huanhuan"], ["prepare", "huanhuan", "--sample"]])
@pytest.mark.parametrize("data_dir", ["ONLINE", "REMOTE:someone/data"])
def test_hub_data_dirs_are_not_folders(cli, tmp_path, monkeypatch, verb, data_dir):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*verb, "--data-dir", data_dir)
    assert code == 2 and "read from the hub" in err and not list(tmp_path.iterdir())


def test_sharegpt_pairs_written_as_text_are_named(cli, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"conversations": [{"from": "human", "value": "q"}], "chosen": "a", "rejected": "b"}\n')
    code, _, err = cli("register", "--file", f, "--name", "p", "--stage", "dpo", "--data-dir", tmp_path)
    assert code == 2 and "chosen/rejected are text" in err and '"chosen": {"from": "gpt"' in err
    assert not (tmp_path / "dataset_info.json").exists()

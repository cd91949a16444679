"""Every layout LLaMA-Factory reads: `register --file` (only --name and --stage) detects it and writes an entry, `check`
counts the usable rows, and LLaMA-Factory's own `get_dataset` reads exactly that many rows from the entry."""

import json
import re
import shutil
from pathlib import Path

import pytest

LAYOUTS = Path(__file__).parent / "data" / "layouts"
# file, stage, the words register uses for its layout, rows
CASES = [
    ("alpaca_sft.json", "sft", "alpaca", 5),
    ("alpaca_pairs.jsonl", "dpo", "alpaca, preference pairs", 4),
    ("alpaca_kto.jsonl", "kto", "alpaca, kto (label)", 4),
    ("sharegpt_sft.json", "sft", "sharegpt (from/value)", 4),
    ("openai_sft.jsonl", "sft", "sharegpt (role/content)", 4),
    ("sharegpt_pairs.json", "rm", "sharegpt (from/value), preference pairs", 3),
    ("sharegpt_kto.json", "kto", "sharegpt (role/content), kto (label)", 4),
    ("chat_pairs.jsonl", "dpo", "sharegpt (role/content), preference pairs", 3),
    ("pretrain.txt", "pt", "plain text", 5),
    ("pretrain.jsonl", "pt", "plain text", 3),
    ("images_sft.json", "sft", "sharegpt (role/content)", 3),
    ("media_sft.json", "sft", "sharegpt (role/content)", 3),  # videos as frame lists, audios
    ("alpaca_sft.csv", "sft", "alpaca", 4),
    ("sharegpt_sft.parquet", "sft", "sharegpt (from/value)", 4),
    ("alpaca_pairs.arrow", "dpo", "alpaca, preference pairs", 4),
    ("chats", "sft", "sharegpt (role/content)", 4),  # a folder of jsonl files
    ("lines.json", "sft", "alpaca", 5),  # a .json file holding one object per line
]


def derived_sources(d: Path) -> None:
    """The other file types LLaMA-Factory reads, written from our rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (d / "alpaca_sft.csv").write_text('instruction,input,output\nName a colour.,,Red.\nAdd.,"2, 3",5.\n'
                                      'Greet.,,"Hello, friend."\nSpell it.,dog,D-O-G.\n', encoding="utf-8")
    sharegpt = json.loads((d / "sharegpt_sft.json").read_text(encoding="utf-8"))
    pq.write_table(pa.Table.from_pylist([{"conversations": r["conversations"]} for r in sharegpt]), d / "sharegpt_sft.parquet")
    pairs = [json.loads(line) for line in (d / "alpaca_pairs.jsonl").read_text().splitlines()]
    table = pa.Table.from_pylist(pairs)
    with pa.ipc.new_stream(d / "alpaca_pairs.arrow", table.schema) as writer:
        writer.write_table(table)
    chats = (d / "openai_sft.jsonl").read_text(encoding="utf-8").splitlines()
    (d / "chats").mkdir()
    (d / "chats" / "part-0.jsonl").write_text("\n".join(chats[:2]) + "\n", encoding="utf-8")
    (d / "chats" / "part-1.jsonl").write_text("\n".join(chats[2:]) + "\n", encoding="utf-8")
    rows = json.loads((d / "alpaca_sft.json").read_text(encoding="utf-8"))
    (d / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("layouts")
    shutil.copytree(LAYOUTS, d, dirs_exist_ok=True)
    derived_sources(d)
    return d


def usable(out: str) -> int:
    return int(re.search(r"(\d+) usable for stage", out).group(1))


@pytest.fixture(scope="module")
def registered(data_dir):
    """Each file registered by name and stage alone, and checked; -> {name: (stage, check's usable count)}."""
    from llf_recipes.cli import main

    got = {}
    for file, stage, layout, rows in CASES:
        name = Path(file).name.replace(".", "_")
        assert main(["register", "--file", str(data_dir / file), "--name", name, "--stage", stage,
                     "--data-dir", str(data_dir)]) == 0, file
        got[name] = (stage, layout, rows)
    return got


def test_register_detects_each_layout_and_check_counts(registered, data_dir, cli):
    info = json.loads((data_dir / "dataset_info.json").read_text(encoding="utf-8"))
    for name, (stage, layout, rows) in registered.items():
        code, out, err = cli("check", name, "--stage", stage, "--data-dir", data_dir)
        assert code == 0, (name, out, err)
        assert usable(out) == rows, (name, out)
        code, out, _ = cli("register", "--file", data_dir / info[name]["file_name"], "--name", name, "--stage", stage,
                           "--data-dir", data_dir, "--dry-run")
        assert code == 0 and layout in out.splitlines()[0] and f"unchanged: {name}" in out
    assert info["pretrain_txt"]["columns"] == {"prompt": "text"}
    assert info["images_sft_json"]["columns"] == {"messages": "messages", "images": "images"}
    assert info["media_sft_json"]["columns"] == {"messages": "messages", "videos": "videos", "audios": "audios"}
    assert info["sharegpt_sft_json"]["columns"] == {"messages": "conversations", "tools": "tools"}  # no system column in the data
    assert info["sharegpt_pairs_json"]["ranking"] is True and info["alpaca_kto_jsonl"]["columns"]["kto_tag"] == "label"
    assert info["openai_sft_jsonl"]["tags"]["role_tag"] == "role" and info["chats"]["file_name"] == "chats"


@pytest.mark.engine
def test_llamafactory_reads_what_check_counts(registered, data_dir, tiny_model, tmp_path, capsys):
    from llf_loader import loaded_rows

    from llf_recipes.cli import main

    for name, (stage, _, rows) in registered.items():
        main(["check", name, "--stage", stage, "--data-dir", str(data_dir)])
        counted = usable(capsys.readouterr().out)
        read = loaded_rows(tiny_model, data_dir, name, stage, tmp_path / name, media=name.startswith(("images", "media")))
        assert read == counted == rows, name


MIXED = {
    # rows LLaMA-Factory drops: its converter empties them, or the stage's processor finds the wrong shape
    "mixed_sharegpt.jsonl": ({"formatting": "sharegpt", "columns": {"messages": "conversations"}}, "sft", [
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
        {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "again"}]},  # two user turns
        {"conversations": [{"from": "gpt", "value": "I speak first"}, {"from": "human", "value": "b"}]},
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}]},
        {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
        {"conversations": [{"from": "human", "value": "a"}, {"from": "bot", "value": "unknown role"}]},
    ], 2),
    "mixed_alpaca.jsonl": ({}, "sft", [
        {"instruction": "a", "input": "", "output": "b"},
        {"instruction": "a", "input": ""},  # no output: nothing to learn
        {"instruction": "", "input": "", "output": "kept though empty"},
        {"instruction": "a", "input": "x", "output": None},
    ], 2),
    "mixed_kto.jsonl": ({"columns": {"prompt": "instruction", "response": "output", "kto_tag": "label"}}, "kto", [
        {"instruction": "a", "output": "b", "label": True},
        {"instruction": "a", "output": "b", "label": None},
        {"instruction": "a", "output": "c", "label": False},
    ], 2),
    "mixed_pairs.json": ({"ranking": True, "formatting": "sharegpt", "tags": {"role_tag": "role", "content_tag": "content",
                          "user_tag": "user", "assistant_tag": "assistant"},
                          "columns": {"messages": "messages", "chosen": "chosen", "rejected": "rejected"}}, "dpo", [
        {"messages": [{"role": "user", "content": "q"}], "chosen": {"role": "assistant", "content": "g"},
         "rejected": {"role": "assistant", "content": "b"}},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "even"}],
         "chosen": {"role": "assistant", "content": "g"}, "rejected": {"role": "assistant", "content": "b"}},
        {"messages": [{"role": "user", "content": "q"}], "chosen": None, "rejected": None},
        {"messages": [{"role": "system", "content": "no system_tag in a partial tags block"}, {"role": "user", "content": "q"}],
         "chosen": {"role": "assistant", "content": "g"}, "rejected": {"role": "assistant", "content": "b"}},
    ], 1),
}


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixed")
    info = {}
    for file, (entry, _, rows, _) in MIXED.items():
        text = json.dumps(rows) if file.endswith(".json") else "".join(json.dumps(r) + "\n" for r in rows)
        (d / file).write_text(text, encoding="utf-8")
        info[file.split(".")[0]] = {"file_name": file, **entry}
    (d / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return d


def test_check_names_rows_llamafactory_drops(mixed_dir, cli):
    for file, (_, stage, rows, expected) in MIXED.items():
        code, out, _ = cli("check", file.split(".")[0], "--stage", stage, "--data-dir", mixed_dir, "--show", "9")
        assert code == 1 and usable(out) == expected, (file, out)
        assert out.count("LLaMA-Factory drops it") == len(rows) - expected, out
    _, out, _ = cli("check", "mixed_sharegpt", "--stage", "sft", "--data-dir", mixed_dir, "--show", "9")
    assert "mixed_sharegpt.jsonl:2: LLaMA-Factory drops it: message 1 has role 'human' where LLaMA-Factory expects " \
           "'gpt' or 'function_call' (field 'conversations')" in out
    assert "mixed_sharegpt.jsonl:4: LLaMA-Factory drops it: 3 turn(s)" in out
    code, _, err = cli("register", "--file", mixed_dir / "mixed_sharegpt.jsonl", "--name", "m", "--stage", "sft",
                       "--data-dir", mixed_dir / "new")
    assert code == 2 and "mixed_sharegpt.jsonl:2" in err and "nothing was registered" in err
    assert not (mixed_dir / "new" / "dataset_info.json").exists()


@pytest.mark.engine
def test_llamafactory_drops_the_same_rows(mixed_dir, tiny_model, tmp_path):
    from llf_loader import loaded_rows

    for file, (_, stage, _, expected) in MIXED.items():
        name = file.split(".")[0]
        assert loaded_rows(tiny_model, mixed_dir, name, stage, tmp_path / name) == expected, name


@pytest.mark.engine
def test_image_count_mismatch_stops_both(tmp_path, tiny_model, cli):
    shutil.copytree(LAYOUTS / "media", tmp_path / "media")
    row = {"messages": [{"role": "user", "content": "<image> and <image>?"}, {"role": "assistant", "content": "one"}],
           "images": ["media/dot.png"]}
    (tmp_path / "bad.json").write_text(json.dumps([row]), encoding="utf-8")
    code, _, err = cli("register", "--file", tmp_path / "bad.json", "--name", "bad", "--stage", "sft", "--data-dir", tmp_path)
    assert code == 2 and "bad.json:1 (row 1)" in err and "1 images but 2 <image> placeholder(s)" in err
    entry = {"file_name": "bad.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps({"bad": entry}), encoding="utf-8")
    from llf_loader import loaded_rows

    with pytest.raises(ValueError, match="number of images does not match"):
        loaded_rows(tiny_model, tmp_path, "bad", "sft", tmp_path / "w", media=True)


def test_hub_entries_are_checked_from_the_local_cache_or_not_at_all(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    info = {"remote": {"hf_hub_url": "someone/chats", "formatting": "sharegpt"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    code, out, _ = cli("check", "remote", "--stage", "sft", "--data-dir", tmp_path)
    assert code == 0 and "not checked" in out and "someone/chats" in out and "not in the local cache" in out
    snapshot = tmp_path / "hub" / "datasets--someone--chats" / "snapshots" / "abc123" / "data"
    snapshot.mkdir(parents=True)
    shutil.copy(LAYOUTS / "sharegpt_sft.json", snapshot / "train.json")
    code, out, _ = cli("check", "remote", "--stage", "sft", "--data-dir", tmp_path)
    assert code == 0 and "4 row(s), 4 usable for stage sft" in out
    for data_dir in ("ONLINE", "REMOTE:someone/configs"):
        code, out, _ = cli("check", "anything", "--stage", "sft", "--data-dir", data_dir)
        assert code == 0 and "not checked" in out and data_dir in out


def test_wrong_tags_name_the_layout_and_the_command(cli, tmp_path):
    shutil.copy(LAYOUTS / "openai_sft.jsonl", tmp_path / "chats.jsonl")
    entry = {"file_name": "chats.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"}}  # from/value tags
    (tmp_path / "dataset_info.json").write_text(json.dumps({"chats": entry}))
    code, out, _ = cli("check", "chats", "--stage", "sft", "--data-dir", tmp_path)
    assert code == 1 and "4 row(s), 0 usable" in out and "no 'from'/'value' keys" in out
    assert "the rows look like sharegpt (role/content)" in out and "llf-recipes register --file" in out


NUM_SAMPLES = {"file_name": "pairs.jsonl", "ranking": True, "num_samples": 7,
               "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}}
OPENAI = {"file_name": "tools.jsonl", "formatting": "openai", "columns": {"messages": "messages", "tools": "tools"},
          "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                   "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}}


@pytest.fixture
def entries_dir(tmp_path):
    shutil.copy(LAYOUTS / "alpaca_pairs.jsonl", tmp_path / "pairs.jsonl")
    tool_rows = (LAYOUTS / "openai_tools.jsonl").read_text(encoding="utf-8").splitlines()[:2]
    bad = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "tools": []}
    (tmp_path / "tools.jsonl").write_text("\n".join([*tool_rows, json.dumps(bad)]) + "\n", encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"sampled": NUM_SAMPLES, "openai": OPENAI}))
    return tmp_path


def test_num_samples_and_openai_formatting(cli, entries_dir):
    code, out, _ = cli("check", "sampled", "--stage", "dpo", "--data-dir", entries_dir)
    assert code == 0 and "4 usable" in out and "draw 7 row(s) from these (with repeats)" in out
    code, out, _ = cli("check", "openai", "--stage", "sft", "--data-dir", entries_dir, "--preview", "1")
    assert code == 1 and "3 row(s), 2 usable" in out and "tools.jsonl:3: LLaMA-Factory drops it" in out
    preview = json.loads(out.splitlines()[0])
    assert [m["role"] for m in preview["prompt"]] == ["user", "function", "observation"]


@pytest.mark.engine
def test_llamafactory_agrees_on_num_samples_and_openai(entries_dir, tiny_model, tmp_path):
    from llf_loader import loaded_rows

    assert loaded_rows(tiny_model, entries_dir, "sampled", "dpo", tmp_path / "s") == 7
    assert loaded_rows(tiny_model, entries_dir, "openai", "sft", tmp_path / "o") == 2


def test_preview_shows_rows_after_conversion(cli):
    code, out, _ = cli("check", "tests/data/layouts/sharegpt_sft.json", "--stage", "sft", "--preview", "2")
    assert code == 0
    second = json.loads(out.splitlines()[2])
    assert second["system"] == "You are a weather bot." and json.loads(second["tools"])[0]["name"] == "get_weather"
    assert [m["role"] for m in second["prompt"]] == ["user", "function", "observation"]
    assert second["response"] == [{"role": "assistant", "content": "It is -3 °C and snowing in Oslo."}]


def test_a_split_other_than_train_on_a_local_file(cli, tmp_path):
    shutil.copy(LAYOUTS / "alpaca_kto.jsonl", tmp_path / "k.jsonl")
    entry = {"file_name": "k.jsonl", "split": "test", "columns": {"prompt": "instruction", "response": "output",
                                                                  "kto_tag": "label"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps({"k": entry}))
    code, _, err = cli("check", "k", "--stage", "kto", "--data-dir", tmp_path)
    assert code == 2 and "split 'test'" in err and "only 'train'" in err

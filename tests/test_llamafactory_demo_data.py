"""LLaMA-Factory's own demo data (its `data/` folder and dataset_info.json): every local-file entry passes `check` with
the stage that fits it, and `register --file` on each file writes an entry LLaMA-Factory's `get_dataset` reads the same
row count from. Runs when LLF_LLAMAFACTORY_SRC points at a LLaMA-Factory checkout (e.g. tag v0.9.5)."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

SRC = os.environ.get("LLF_LLAMAFACTORY_SRC")
pytestmark = pytest.mark.skipif(not SRC or not (Path(SRC) / "data" / "dataset_info.json").is_file(),
                                reason="set LLF_LLAMAFACTORY_SRC to a LLaMA-Factory checkout to check its demo data")
HUB = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


def local_entries() -> dict[str, dict]:
    info = json.loads((Path(SRC) / "data" / "dataset_info.json").read_text(encoding="utf-8"))
    return {name: e for name, e in info.items() if "file_name" in e and not any(k in e for k in HUB)}


def stage_for(entry: dict) -> str:
    columns = entry.get("columns") or {}
    if entry.get("ranking"):
        return "dpo"
    if columns.get("kto_tag"):
        return "kto"
    return "pt" if columns.get("prompt") == "text" else "sft"


def usable(out: str) -> tuple[int, int]:
    rows, good = re.search(r"(\d+) row\(s\), (\d+) usable for stage", out).groups()
    return int(rows), int(good)


def test_every_local_entry_passes_check(cli):
    entries = local_entries()
    assert len(entries) >= 10
    counts = {}
    for name, entry in entries.items():
        code, out, err = cli("check", name, "--stage", stage_for(entry), "--data-dir", Path(SRC) / "data")
        assert code == 0, (name, out, err)
        rows, good = usable(out)
        assert rows == good > 0, (name, out)
        counts[name] = good
    print("check:", json.dumps(counts))


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """The demo files in a data dir of their own, each registered with --file, --name and --stage only."""
    from llf_recipes.cli import main

    data = tmp_path_factory.mktemp("demo") / "data"
    shutil.copytree(Path(SRC) / "data", data, ignore=shutil.ignore_patterns("dataset_info.json"))
    out = {}
    for name, entry in local_entries().items():
        stage = stage_for(entry)
        assert main(["register", "--file", str(data / entry["file_name"]), "--name", name, "--stage", stage,
                     "--data-dir", str(data)]) == 0, name
        out[name] = stage
    return data, out


def test_register_file_on_each_demo_file_checks(registered, cli):
    data, stages = registered
    info = json.loads((data / "dataset_info.json").read_text(encoding="utf-8"))
    for name, stage in stages.items():
        code, out, _ = cli("check", name, "--stage", stage, "--data-dir", data)
        assert code == 0 and usable(out)[0] == usable(out)[1], (name, out)
    assert info["glaive_toolcall_en_demo"]["columns"] == {"messages": "conversations", "tools": "tools"}
    assert info["dpo_en_demo"]["ranking"] is True and info["wiki_demo"]["columns"] == {"prompt": "text"}
    assert info["mllm_demo"]["columns"] == {"messages": "messages", "images": "images"}


@pytest.mark.engine
def test_llamafactory_loads_each_registered_demo_file(registered, tiny_model, tmp_path, capsys):
    from llf_loader import loaded_rows

    from llf_recipes.cli import main

    data, stages = registered
    counts = {}
    for name, stage in stages.items():
        main(["check", name, "--stage", stage, "--data-dir", str(data)])
        checked = usable(capsys.readouterr().out)[1]
        read = loaded_rows(tiny_model, data, name, stage, tmp_path / name, media=name.startswith("mllm"))
        assert read == checked, name
        counts[name] = read
    with capsys.disabled():
        print("\nLLaMA-Factory get_dataset rows == check's usable rows:", json.dumps(counts))

"""`generate --dataset FILE`: prompts from a JSON or JSON-lines file whose layout is detected, read by LLaMA-Factory's
own loader exactly as the same rows registered under a name; a bad file stops with its name (and line), writing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES, make_data_dir

from llf_recipes.catalog import Catalog

GREEDY = ["--temperature", "0", "--max-new-tokens", "6", "--limit", "3", "--no-progress"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("genfile") / "data", Catalog.discover(project_dir=ROOT), ["huanhuan"])


def _answers(path: Path) -> list[tuple[list, list]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [(r["prompt"], r["answers"]) for r in rows]


def test_a_file_of_prompts_answers_as_the_registered_dataset_does(tiny_model, data_dir, tmp_path, cli):
    source = [json.loads(x) for x in (SAMPLES / "huanhuan.jsonl").read_text(encoding="utf-8").splitlines()][:3]
    alpaca = tmp_path / "prompts.jsonl"  # alpaca rows, without answers
    alpaca.write_text("".join(json.dumps({"instruction": r["instruction"], "input": r.get("input", "")},
                                         ensure_ascii=False) + "\n" for r in source), encoding="utf-8")
    sharegpt = tmp_path / "chats.json"  # a JSON array of role/content conversations with their answers
    sharegpt.write_text(json.dumps([{"messages": [
        {"role": "user", "content": r["instruction"] + ("\n" + r["input"] if r.get("input") else "")},
        {"role": "assistant", "content": r["output"]}]} for r in source], ensure_ascii=False), encoding="utf-8")
    outputs = {}
    for label, dataset in (("named", "huanhuan"), ("alpaca", str(alpaca)), ("sharegpt", str(sharegpt))):
        outputs[label] = tmp_path / f"{label}.jsonl"
        code, out, err = cli("generate", tiny_model, "--template", "qwen", "--dataset", dataset, "--data-dir", data_dir,
                             "-o", outputs[label], *GREEDY)
        assert code == 0, err
        assert "generated answers to 3 of 3 prompts" in out
    named = _answers(outputs["named"])
    assert [p[-1]["content"] for p, _ in named] == [
        r["instruction"] + ("\n" + r["input"] if r.get("input") else "") for r in source]
    assert _answers(outputs["alpaca"]) == named and _answers(outputs["sharegpt"]) == named
    rows = [json.loads(x) for x in outputs["sharegpt"].read_text(encoding="utf-8").splitlines()]
    assert [r["reference"] for r in rows] == [r["output"] for r in source]
    assert rows[0]["settings"]["datasets"] == [str(sharegpt)]


@pytest.mark.parametrize("content, message", [
    (None, "no such file: "),
    ('{"instruction": "a"}\n{"instruction": \n', ".jsonl:2: invalid JSON"),
    ('{"messages": [{"role": "user", "content": "only a question"}]}\n', "nothing was generated"),
    ("", "prompts.jsonl is empty"),
])
def test_a_bad_prompt_file_stops_with_one_clear_error(tiny_model, tmp_path, cli, content, message):
    path = tmp_path / "prompts.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, _, err = cli("generate", tiny_model, "--template", "qwen", "--dataset", path, "-o", out, *GREEDY)
    assert code == 2 and message in err and err.startswith("error: ") and "Traceback" not in err
    assert not out.exists()


def test_a_file_is_not_mixed_with_named_datasets(tiny_model, data_dir, tmp_path, cli):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"instruction": "a"}\n', encoding="utf-8")
    code, _, err = cli("generate", tiny_model, "--template", "qwen", "--dataset", f"huanhuan,{path}", "--data-dir",
                       data_dir, "-o", tmp_path / "out.jsonl", *GREEDY)
    assert code == 2 and "a file is read alone" in err


def test_a_prompt_file_is_sniffed_once_and_checked_as_pairs_or_prompts(tmp_path, monkeypatch):
    """Its first rows are read once, both to tell pairs from prompts and to detect the layout for that reading."""
    from llf_recipes.data import userdata
    from llf_recipes.generate.sources import prompt_source

    opened = []
    real = userdata.iter_rows

    def counted(path, **kwargs):
        opened.append(path)
        return real(path, **kwargs)

    monkeypatch.setattr(userdata, "iter_rows", counted)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"instruction": "q", "chosen": "good", "rejected": "bad"}) + "\n", encoding="utf-8")
    with prompt_source([str(pairs)], None) as (names, data_dir):
        entry = json.loads((Path(data_dir) / "dataset_info.json").read_text())[names[0]]
    assert entry["ranking"] is True and entry["columns"]["chosen"] == "chosen"
    assert opened == [pairs]

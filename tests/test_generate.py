"""`generate` on the tiny model over a bundled dataset: N answers per prompt, resume after an interruption, greedy
determinism, and settings that must not mix in one file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES, make_data_dir

from llf_recipes.catalog import Catalog

SAMPLED = ["--num-return", "2", "--temperature", "0.8", "--top-p", "0.9", "--repetition-penalty", "1.1",
           "--max-new-tokens", "6", "--limit", "3", "--no-progress"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("gen") / "data", Catalog.discover(project_dir=ROOT), ["huanhuan"])


@pytest.fixture(scope="module")
def sampled(tiny_model, data_dir) -> tuple[Path, bytes, str]:
    """One sampled generation over the first three prompts: (output, its bytes, what the verb printed)."""
    from llf_recipes.cli import main

    out = data_dir.parent / "sampled.jsonl"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["generate", str(tiny_model), "--template", "qwen", "--dataset", "huanhuan", "--data-dir",
                     str(data_dir), "-o", str(out), *SAMPLED])
    assert code == 0, printed.getvalue()
    return out, out.read_bytes(), printed.getvalue()


def _rows(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def test_generate_writes_n_answers_per_prompt_with_reference_and_settings(sampled):
    _, data, printed = sampled
    rows = _rows(data)
    source = [json.loads(line) for line in (SAMPLES / "huanhuan.jsonl").read_text(encoding="utf-8").splitlines()][:3]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r["prompt"][-1]["content"] for r in rows] == [s["instruction"] for s in source]
    assert [r["reference"] for r in rows] == [s["output"] for s in source]
    assert all(len(r["answers"]) == 2 and all(isinstance(a, str) for a in r["answers"]) for r in rows)
    settings = rows[0]["settings"]
    assert settings["num_return"] == 2 and settings["temperature"] == 0.8 and settings["top_p"] == 0.9
    assert settings["repetition_penalty"] == 1.1 and settings["max_new_tokens"] == 6 and settings["backend"] == "huggingface"
    assert "generated answers to 3 of 3 prompts" in printed


def test_generate_resumes_after_an_interruption_without_regenerating(sampled, tiny_model, data_dir, cli):
    _, data, _ = sampled
    first, second = data.split(b"\n")[:2]
    resumed = data_dir.parent / "resumed.jsonl"
    resumed.write_bytes(first + b"\n" + second[: len(second) // 2])  # killed while writing the second row
    code, stdout, stderr = cli("generate", tiny_model, "--template", "qwen", "--dataset", "huanhuan", "--data-dir",
                               data_dir, "-o", resumed, *SAMPLED)
    assert code == 0, stderr
    assert "generated answers to 2 of 3 prompts, 1 already there" in stdout
    # The kept row is untouched, the torn one is written again, and seeded sampling reproduces the uninterrupted run.
    assert resumed.read_bytes() == data
    code, stdout, _ = cli("generate", tiny_model, "--template", "qwen", "--dataset", "huanhuan", "--data-dir",
                          data_dir, "-o", resumed, *SAMPLED)
    assert code == 0 and "generated answers to 0 of 3 prompts, 3 already there" in stdout


def test_generate_is_deterministic_when_greedy(tiny_model, data_dir, cli):
    outputs = []
    for name in ("greedy-a.jsonl", "greedy-b.jsonl"):
        out = data_dir.parent / name
        code, _, stderr = cli("generate", tiny_model, "--template", "qwen", "--dataset", "huanhuan", "--data-dir",
                              data_dir, "-o", out, "--temperature", "0", "--max-new-tokens", "8", "--limit", "2",
                              "--seed", "1" if name.endswith("a.jsonl") else "2", "--no-progress")
        assert code == 0, stderr
        rows = _rows(out.read_bytes())
        assert len(rows) == 2 and all(len(r["answers"]) == 1 and r["answers"][0] for r in rows)
        assert rows[0]["settings"]["temperature"] == 0
        outputs.append([r["answers"] for r in rows])
    assert outputs[0] == outputs[1]  # another seed changes nothing when decoding greedily


def test_generate_refuses_to_mix_settings_and_greedy_duplicates(sampled, tiny_model, data_dir, cli):
    out, data, _ = sampled
    code, _, stderr = cli("generate", tiny_model, "--template", "qwen", "--dataset", "huanhuan", "--data-dir",
                          data_dir, "-o", out, *SAMPLED[:-3], "--temperature", "0.5", "--no-progress")
    assert code == 2 and f"{out}:1: was generated with other settings (temperature differ)" in stderr
    assert out.read_bytes() == data
    code, _, stderr = cli("generate", tiny_model, "--template", "qwen", "--dataset", "huanhuan", "--data-dir",
                          data_dir, "-o", data_dir.parent / "dup.jsonl", "--num-return", "3", "--temperature", "0")
    assert code == 2 and "--num-return 3 with --temperature 0" in stderr
    assert not (data_dir.parent / "dup.jsonl").exists()
    code, _, stderr = cli("generate", data_dir, "--dataset", "huanhuan", "-o", data_dir.parent / "x.jsonl")
    assert code == 2 and "no completed run found" in stderr and "Traceback" not in stderr

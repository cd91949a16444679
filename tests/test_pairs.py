"""`pairs`: best vs worst per prompt from scored answers, ties and thin margins dropped and counted, registered with
`ranking: true`; LLaMA-Factory's own loader reads the pairs back, and a DPO stage trains on them (tiny model, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli_subprocess

ENV = {"DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"}
ROWS = [  # (prompt turns, system, answers, scores)
    ([{"role": "user", "content": "What is a tokenizer?"}], None,
     ["It splits text into ids.", "A fruit.", "Text to ids, roughly."], [8.0, 1.5, 6.0]),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
      {"role": "user", "content": "Give me a haiku."}], "Answer in English.",
     ["Quiet morning rain / the kettle hums", "No."], [0.42, -0.31]),
    ([{"role": "user", "content": "tie"}], None, ["same", "other"], [5, 5]),  # a tie: dropped
    ([{"role": "user", "content": "thin"}], None, ["a", "b"], [5.0, 4.9]),  # within --min-margin 0.2: dropped
    ([{"role": "user", "content": "one judged"}], None, ["a", "b"], [7, None]),  # one malformed verdict: dropped
]


def _scored(path: Path) -> Path:
    rows = [{"index": i, "prompt": p, "system": s, "reference": None, "answers": a, "scores": sc, "settings": {}}
            for i, (p, s, a, sc) in enumerate(ROWS)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def pairs_dir(tmp_path, cli) -> Path:
    code, out, err = cli("pairs", _scored(tmp_path / "scored.jsonl"), "--name", "selfplay", "--data-dir",
                         tmp_path / "data", "--min-margin", "0.2")
    assert code == 0, err
    assert "2 pairs from 5 prompts" in out and "dropped: 1 ties, 1 within the margin, 1 with fewer than two" in out
    return tmp_path / "data"


def test_pairs_are_read_by_llamafactory_as_preference_rows(pairs_dir):
    pytest.importorskip("llamafactory")
    from llf_recipes.eval.heldout import named_heldout

    info = json.loads((pairs_dir / "dataset_info.json").read_text())
    assert info["selfplay"]["ranking"] is True and info["selfplay"]["file_name"] == "selfplay.json"
    held = named_heldout(["selfplay"], {"template": "qwen"}, {}, pairs_dir, None)
    assert held.kind == "pairs" and len(held.rows) == 2
    first, second = held.rows
    assert [m["content"] for m in first["_response"]] == ["It splits text into ids.", "A fruit."]
    assert first["_prompt"] == [{"role": "user", "content": "What is a tokenizer?"}]
    assert [m["content"] for m in second["_prompt"]] == ["Hi", "Hello!", "Give me a haiku."]
    assert second["_system"] == "Answer in English."
    assert [m["content"] for m in second["_response"]] == ["Quiet morning rain / the kettle hums", "No."]


def test_pairs_refuses_unscored_rows_and_a_clashing_name(pairs_dir, tmp_path, cli):
    unscored = tmp_path / "answers.jsonl"
    unscored.write_text(json.dumps({"index": 0, "prompt": [], "answers": ["a", "b"]}) + "\n")
    code, _, err = cli("pairs", unscored, "--name", "other", "--data-dir", pairs_dir)
    assert code == 2 and "row 0 has no scores" in err and not (pairs_dir / "other.json").exists()
    before = (pairs_dir / "selfplay.json").read_bytes()
    info = json.loads((pairs_dir / "dataset_info.json").read_text())
    info["selfplay"]["file_name"] = "elsewhere.json"
    (pairs_dir / "dataset_info.json").write_text(json.dumps(info))
    code, _, err = cli("pairs", tmp_path / "scored.jsonl", "--name", "selfplay", "--data-dir", pairs_dir)
    assert code == 2 and "already registered with a different definition" in err
    assert (pairs_dir / "selfplay.json").read_bytes() == before


@pytest.mark.engine
def test_dpo_trains_on_the_pairs_through_llamafactory(pairs_dir, tmp_path, tiny_model):
    env = {**ENV, "LLF_RECIPES_CACHE": str(tiny_model.parent)}
    proc = run_cli_subprocess("run", "dpo-ultrafeedback", "--smoke", "--output-root", tmp_path / "saves",
                              "--set", "dataset=selfplay", "--set", f"dataset_dir={pairs_dir}", "--set", "~eval_dataset",
                              "--set", "~eval_strategy", "--set", "~eval_steps", cwd=tmp_path, env=env, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    run_dir = tmp_path / "saves" / "dpo-ultrafeedback" / "dpo"
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert state["global_step"] >= 1 and (run_dir / "adapter_model.safetensors").is_file()
    manifest = json.loads((run_dir / "llf-run.json").read_text())
    assert manifest["status"] == "completed" and manifest["config"]["dataset"] == "selfplay"
    assert "llamafactory-cli" in json.dumps(manifest.get("commands") or manifest)

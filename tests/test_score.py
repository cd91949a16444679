"""`score --reward-model` with the rm stage of a smoke `rlhf-ultrafeedback` run agrees with LLaMA-Factory's own
reward-model prediction (`llamafactory-cli train` with `stage: rm`, `do_predict`) on the same texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import run_cli_subprocess
from rewardruns import ENV, reward_run  # noqa: F401 - the session fixture

ROWS = [
    ("What is a tokenizer?", ["A tokenizer splits text into ids.", "Bananas are yellow."]),
    ("请用一句话介绍你自己。", ["我是一个有用的助手，可以回答问题。", "今天天气很好。"]),
    ("Give me a haiku.", ["Quiet morning rain / the kettle hums a soft tune", "No."]),
]


def _answers(path: Path) -> Path:
    rows = [{"index": i, "prompt": [{"role": "user", "content": q}], "system": None, "reference": None, "answers": a,
             "settings": {}} for i, (q, a) in enumerate(ROWS)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _llamafactory_predict(reward_run: Path, tmp_path: Path) -> list[tuple[float, float]]:  # noqa: F811
    """LLaMA-Factory's own reward scores: its rm predict over (answer 0, answer 1) pairs of the same prompts."""
    data = tmp_path / "oracle"
    data.mkdir()
    pairs = [{"instruction": q, "input": "", "chosen": a[0], "rejected": a[1]} for q, a in ROWS]
    (data / "pairs.json").write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
    (data / "dataset_info.json").write_text(json.dumps({"pairs": {"file_name": "pairs.json", "ranking": True, "columns": {
        "prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}}}))
    manifest = json.loads((reward_run / "llf-run.json").read_text())
    config = {"model_name_or_path": manifest["model"]["base"], "adapter_name_or_path": str(reward_run),
              "trust_remote_code": True, "stage": "rm", "do_predict": True, "finetuning_type": "lora",
              "eval_dataset": "pairs", "dataset_dir": str(data), "template": manifest["config"]["template"],
              "cutoff_len": manifest["config"]["cutoff_len"], "output_dir": str(data / "out"),
              "overwrite_output_dir": True, "per_device_eval_batch_size": 1, "report_to": "none"}
    (data / "predict.yaml").write_text(yaml.safe_dump(config))
    cli = Path(sys.executable).with_name("llamafactory-cli")
    proc = subprocess.run([str(cli), "train", str(data / "predict.yaml")], check=False, env={**os.environ, **ENV},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (data / "out" / "generated_predictions.jsonl").read_text().splitlines()
    return [(json.loads(x)["chosen"], json.loads(x)["rejected"]) for x in lines]


def test_score_agrees_with_llamafactory_reward_prediction(reward_run, tmp_path):  # noqa: F811
    answers = _answers(tmp_path / "answers.jsonl")
    # In its own process, as a user runs it and as the oracle runs.
    proc = run_cli_subprocess("score", answers, "--reward-model", reward_run, "--device", "cpu", "--no-progress", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = [json.loads(line) for line in (tmp_path / "answers.scored.jsonl").read_text().splitlines()]
    ours = [tuple(r["scores"]) for r in scored]
    theirs = _llamafactory_predict(reward_run, tmp_path)
    assert len(ours) == len(theirs) == 3
    for mine, expected in zip(ours, theirs):  # LLaMA-Factory writes its scores rounded to two decimals
        assert all(abs(m - e) <= 0.005 + 1e-6 for m, e in zip(mine, expected)), (ours, theirs)
    assert len({s for pair in ours for s in pair}) == 6  # six texts, six different rewards: not a constant
    assert f"scored 6 answers to 3 prompts with {reward_run}" in proc.stdout


def test_score_refuses_what_is_not_a_reward_model(reward_run, tmp_path, cli, tiny_model):  # noqa: F811
    answers = _answers(tmp_path / "answers.jsonl")
    code, _, err = cli("score", answers, "--reward-model", tiny_model, "--device", "cpu")
    assert code == 2 and "no completed run found" in err and "Traceback" not in err
    fake = tmp_path / "sft"
    fake.mkdir()
    manifest = json.loads((reward_run / "llf-run.json").read_text())
    manifest["model"] = {**manifest["model"], "stage": "sft", "adapters": [str(fake)]}
    (fake / "llf-run.json").write_text(json.dumps(manifest))
    code, _, err = cli("score", answers, "--reward-model", fake, "--device", "cpu")
    assert code == 2 and "is not a reward model: no value head" in err
    assert not (tmp_path / "answers.scored.jsonl").exists()

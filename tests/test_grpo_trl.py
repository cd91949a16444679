"""The TRL backend trains for real on CPU through `llf-recipes run`: the tiny model, a few steps, the recipe's rewards
plus a user's own, rewards logged, a PEFT adapter written, and the result answers through `ask`."""

import json

import pytest
from conftest import run_cli_subprocess

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    pytest.importorskip("trl")
    project = tmp_path_factory.mktemp("grpo_trl")
    proc = run_cli_subprocess("prepare", "gsm8k_grpo", "--sample", "--data-dir", "data", cwd=project)
    assert proc.returncode == 0, proc.stderr
    # Random weights never write <answer>: a length reward of the user's own gives the group different scores, so
    # the policy gradient is not zero.
    (project / "my_rewards.py").write_text("def brevity(response, answer=None, **row):\n    return -len(response) / 50\n")
    sets = [f"model_name_or_path={tiny_model}", "rollout_batch_size=4", "global_batch_size=4", "micro_batch_size=4",
            "grpo.num_generations=2", "grpo.max_steps=2", "grpo.max_completion_length=12", "grpo.learning_rate=1e-2",
            "grpo.save_steps=2", "grpo.rewards=[xmlcount, format, integer, correctness, ./my_rewards.py:brevity]"]
    argv = ["run", "grpo-gsm8k", "--backend", "trl", "--device", "cpu", "--output-root", "out"]
    for s in sets:
        argv += ["--set", s]
    proc = run_cli_subprocess(*argv, cwd=project, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return project, project / "out" / "grpo-gsm8k" / "grpo", proc, argv


def test_rewards_are_logged_every_step(trained):
    _, run_dir, proc, _ = trained
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    steps = [h for h in history if "reward" in h]
    assert len(steps) == 2
    for h in steps:
        for name in ("xmlcount", "format", "integer", "correctness", "brevity"):
            assert f"rewards/{name}/mean" in h
        assert h["rewards/brevity/mean"] < 0  # every completion has some length
    assert any(h["reward_std"] > 0 for h in steps)
    assert "rewards/xmlcount/mean" in (run_dir / "llf-grpo.log").read_text()  # the engine's output, in the log
    progress = [json.loads(line) for line in (run_dir / "trainer_log.jsonl").read_text().splitlines()]
    assert [(p["current_steps"], p["total_steps"]) for p in progress] == [(1, 2), (2, 2)]
    assert "[1/1] grpo: step 2/2, loss " in proc.stderr  # the terminal's progress line, read from that file


def test_a_peft_adapter_is_written_and_trained(trained):
    from safetensors.torch import load_file

    _, run_dir, _, _ = trained
    config = json.loads((run_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16
    weights = load_file(str(run_dir / "adapter_model.safetensors"))
    lora_b = [t for k, t in weights.items() if "lora_B" in k]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: non-zero means it learned


def test_manifest_names_base_and_adapter(trained, tiny_model):
    _, run_dir, _, _ = trained
    data = json.loads((run_dir / "llf-run.json").read_text())
    assert data["status"] == "completed" and data["verb"] == "grpo"
    assert data["model"]["base"] == str(tiny_model)
    assert data["model"]["adapters"] == [str(run_dir.resolve())] and data["model"]["template"] == "qwen"
    assert data["metrics"]["train_runtime"] > 0


def test_the_result_answers_through_ask(trained):
    project, run_dir, _, _ = trained
    proc = run_cli_subprocess("ask", run_dir, "What is 2 + 3?", "--max-new-tokens", "8", cwd=project, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run_dir / "llf-ask.log").read_text()  # the engine's own lines go to the run's ask log
    assert f"Loaded adapter(s): {run_dir.resolve()}" in log


def test_a_second_run_with_the_same_inputs_is_skipped(trained):
    project, run_dir, _, argv = trained
    before = (run_dir / "adapter_model.safetensors").stat().st_mtime_ns
    proc = run_cli_subprocess(*argv, cwd=project, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "skipped, completed" in proc.stdout
    assert (run_dir / "adapter_model.safetensors").stat().st_mtime_ns == before

"""Reruns of a GRPO stage start fresh unless they continue the very computation that was interrupted: `--force` or
changed data starts from step 0 in a clean checkpoint directory (the old checkpoints moved aside, said where); an
interrupted run with the same fingerprint resumes from its own last checkpoint, and says which. TRL runs for real on
CPU; EasyR1 (GPUs only) is a stand-in `verl.trainer.main` that keeps EasyR1's checkpoint layout and its resume rules
(load_checkpoint_path, else find_last_checkpoint with checkpoint_tracker.json)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import easyr1_standin
import pytest
from conftest import ROOT, run_cli_subprocess

STANDIN_MAIN = '''
import json, os, sys
import yaml

config = yaml.safe_load(open(sys.argv[1].split("=", 1)[1]))
trainer = config["trainer"]
root = trainer["save_checkpoint_path"]
tracker = os.path.join(root, "checkpoint_tracker.json")
start = 0
if trainer.get("load_checkpoint_path"):
    start = int(os.path.basename(trainer["load_checkpoint_path"].rstrip("/")).split("_")[-1])
elif trainer.get("find_last_checkpoint", True) and os.path.exists(tracker):  # EasyR1's default
    start = json.load(open(tracker))["last_global_step"]
rows = sum(1 for _ in open(config["data"]["train_files"]))
stop_after = int(os.environ.get("STANDIN_STOP_AFTER", "0"))
print(f"stand-in EasyR1: starting at step {start} with {rows} rows", flush=True)
for step in range(start + 1, trainer["max_steps"] + 1):
    actor = os.path.join(root, f"global_step_{step}", "actor")
    os.makedirs(os.path.join(actor, "lora_adapter"), exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        open(os.path.join(actor, "lora_adapter", name), "w").write(json.dumps({"step": step, "rows": rows}))
    open(os.path.join(root, f"global_step_{step}", "dataloader.pt"), "w").write("state")
    json.dump({"last_global_step": step, "best_global_step": step}, open(tracker, "w"))
    print(f"stand-in EasyR1: saved step {step}", flush=True)
    if stop_after and step == stop_after:
        sys.exit(1)
'''


@pytest.fixture
def project(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("prepare", "gsm8k_grpo", "--sample", "--data-dir", "data")[0] == 0
    easyr1_standin.make(tmp_path / "standin", STANDIN_MAIN)
    return tmp_path


def easyr1(project: Path, *extra: str, env: dict | None = None):
    (project / "hosts").write_text("localhost slots=1\n")
    argv = ["run", "grpo-gsm8k", "--backend", "easyr1", "--hostfile", "hosts", "--device", "cpu", "--set", "max_steps=3",
            "--set", "rollout_batch_size=4", "--set", "global_batch_size=4", "--set", "micro_batch_size=4", *extra]
    env = {"PYTHONPATH": f"{project / 'standin'}{os.pathsep}{ROOT}", "LLF_EASYR1_PYTHON": sys.executable,
           "LLF_RECIPES_VERBOSE": "1", **(env or {})}  # the engine's own lines on the terminal too
    return run_cli_subprocess(*argv, cwd=project, env=env, timeout=300)


def started_at(proc) -> int:
    line = next(x for x in proc.stdout.splitlines() if "stand-in EasyR1: starting at step" in x)
    return int(line.split("starting at step ")[1].split()[0])


def test_easyr1_reruns_start_fresh_and_an_interrupted_run_resumes(project):
    run_dir = project / "saves" / "grpo-gsm8k" / "grpo"
    ckpts = run_dir / "checkpoints"
    first = easyr1(project)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert started_at(first) == 0 and sorted(p.name for p in ckpts.glob("global_step_*")) == \
        ["global_step_1", "global_step_2", "global_step_3"]
    config = json.loads(json.dumps(__import__("yaml").safe_load((run_dir / "llf-easyr1.yaml").read_text())))
    assert config["trainer"]["find_last_checkpoint"] is False  # set deliberately, never EasyR1's guess

    # --force: from step 0 in a clean directory; the old checkpoints moved aside, and the run says where
    forced = easyr1(project, "--force")
    assert forced.returncode == 0, forced.stdout[-3000:] + forced.stderr[-3000:]
    assert started_at(forced) == 0
    aside = sorted(run_dir.glob("checkpoints/superseded-*")) or sorted(run_dir.glob("superseded-*"))
    assert aside and "moved aside" in forced.stderr and str(aside[-1]) in forced.stderr
    assert sorted(p.name for p in aside[-1].glob("global_step_*")) == ["global_step_1", "global_step_2", "global_step_3"]

    # changed data: a different fingerprint, so a fresh start too (EasyR1's default would resume at step 3)
    data = project / "data" / "gsm8k_grpo.jsonl"
    rows = data.read_text().splitlines()
    data.write_text("\n".join(rows[:-1]) + "\n")
    changed = easyr1(project)
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert started_at(changed) == 0 and "changed" in changed.stdout
    assert json.loads((run_dir / "llf-run.json").read_text())["status"] == "completed"

    # an interrupted attempt (it stopped after saving step 1), rerun unchanged: resumes from its own step 1
    stopped = easyr1(project, "--force", env={"STANDIN_STOP_AFTER": "1"})
    assert stopped.returncode != 0 and json.loads((run_dir / "llf-run.json").read_text())["status"] == "failed"
    resumed = easyr1(project)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert started_at(resumed) == 1 and "resuming from global_step_1" in resumed.stdout
    record = json.loads((run_dir / "llf-run.json").read_text())
    assert record["start"] == "resume" and record["resumed_from"].endswith("global_step_1")
    # and a finished run with the same fingerprint is skipped, not retrained
    again = easyr1(project)
    assert again.returncode == 0 and "skipped" in again.stdout and "stand-in EasyR1" not in again.stdout


COUNTED_REWARD = '''
import os
from pathlib import Path


def counted(response, answer=None, **row):
    """Counts its calls (one per scored completion), and stops the run on purpose once checkpoint-2 is saved."""
    with open(os.environ["LLF_TEST_CALLS"], "a") as fh:
        fh.write("x\\n")
    saved = Path(os.environ["LLF_TEST_RUN_DIR"]) / "checkpoint-2" / "trainer_state.json"
    if os.environ.get("LLF_TEST_STOP") and saved.exists():
        raise RuntimeError("stopped on purpose after checkpoint-2")
    return -len(response) / 50
'''


@pytest.mark.engine
def test_trl_reruns_start_fresh_and_an_interrupted_run_resumes(project, tiny_model):
    pytest.importorskip("trl")
    (project / "counted.py").write_text(COUNTED_REWARD)
    run_dir = project / "out" / "grpo-gsm8k" / "grpo"
    sets = [f"model_name_or_path={tiny_model}", "rollout_batch_size=4", "global_batch_size=4", "micro_batch_size=4",
            "grpo.num_generations=2", "grpo.max_steps=4", "grpo.max_completion_length=8", "grpo.save_steps=2",
            "grpo.rewards=[format, ./counted.py:counted]"]
    argv = ["run", "grpo-gsm8k", "--backend", "trl", "--device", "cpu", "--output-root", "out"]
    for s in sets:
        argv += ["--set", s]

    def run(tag: str, *extra: str, stop: bool = False):
        calls = project / f"calls-{tag}"
        env = {"LLF_TEST_CALLS": str(calls), "LLF_TEST_RUN_DIR": str(run_dir), "PYTHONPATH": str(ROOT),
               "LLF_RECIPES_VERBOSE": "1",
               **({"LLF_TEST_STOP": "1"} if stop else {})}
        proc = run_cli_subprocess(*argv, *extra, cwd=project, env=env, timeout=900)
        return proc, (len(calls.read_text().splitlines()) if calls.exists() else 0)

    stopped, _ = run("a", stop=True)
    assert stopped.returncode != 0 and (run_dir / "checkpoint-2" / "trainer_state.json").is_file()
    assert json.loads((run_dir / "llf-run.json").read_text())["status"] == "failed"

    resumed, resumed_calls = run("b")  # same fingerprint: continue from the attempt's own checkpoint-2
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming from checkpoint-2" in resumed.stdout
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 4

    forced, forced_calls = run("c", "--force")  # from step 0, the old checkpoints moved aside
    assert forced.returncode == 0, forced.stdout[-3000:] + forced.stderr[-3000:]
    assert "moved aside" in forced.stderr
    assert forced_calls == 2 * resumed_calls > 0  # four steps scored, where the resumed run scored two
    aside = sorted(run_dir.glob("superseded-*"))
    assert aside and {p.name for p in aside[-1].iterdir()} >= {"checkpoint-2", "checkpoint-4"}

    data = project / "data" / "gsm8k_grpo.jsonl"
    data.write_text("\n".join(data.read_text().splitlines()[:-1]) + "\n")
    changed, changed_calls = run("d")  # changed data: fresh as well, where the trainer alone would skip to step 4
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert changed_calls == forced_calls and "changed" in changed.stdout
    assert json.loads((run_dir / "trainer_state.json").read_text())["global_step"] == 4

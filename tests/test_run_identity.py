"""A stage's checkpoints and processes belong to the run that made them: a rerun on changed data never resumes from a
checkpoint of the old data, and a `run` killed with SIGKILL takes its trainer with it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_nothing_left, processes_with, run_cli_subprocess

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("identity")
    proc = run_cli_subprocess("prepare", "--recipe", "sft-huanhuan", "--sample", cwd=root, env=env_for(tiny_model))
    assert proc.returncode == 0, proc.stderr
    return root


def env_for(tiny_model: Path) -> dict[str, str]:
    return {"LLF_RECIPES_CACHE": str(tiny_model.parent), "TOKENIZERS_PARALLELISM": "false"}


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "llf-run.json").read_text())


def start(project: Path, tiny_model: Path, argv: list[str], **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "llf_recipes", *argv], cwd=project,
                            env={**os.environ, **env_for(tiny_model), **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"ended before {what}: " + proc.stdout.read().decode()[-3000:])
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


def test_a_rerun_on_changed_data_never_resumes_from_a_checkpoint_of_the_old_data(project, tiny_model):
    data = project / "stale-data"
    shutil.copytree(project / "data", data)
    out_root = project / "saves" / "stale"
    argv = ["run", "sft-huanhuan", "--smoke", "--output-root", str(out_root), "--set", f"dataset_dir={data}"]
    run_dir = out_root / "sft-huanhuan" / "sft"
    first = run_cli_subprocess(*argv, cwd=project, env=env_for(tiny_model))
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    old_adapter = (run_dir / "checkpoint-3" / "adapter_model.safetensors").read_bytes()
    finals = ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "train_results.json",
              "all_results.json")
    old_finals = {name: (run_dir / name).read_bytes() for name in finals}
    old_sha = manifest(run_dir)["datasets"]["huanhuan"]["sha256"]

    # New data; the rerun is interrupted before it saves anything.
    rows = [json.loads(line) for line in (data / "huanhuan.jsonl").read_text(encoding="utf-8").splitlines()]
    (data / "huanhuan.jsonl").write_text("".join(json.dumps({**r, "output": r["output"][::-1] + "。新"},
                                                            ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    proc = start(project, tiny_model, argv)
    wait_for(lambda: (run_dir / "llf-sft.log").is_file() and manifest(run_dir)["status"] == "running"
             and manifest(run_dir)["datasets"]["huanhuan"]["sha256"] != old_sha, proc, "the second attempt")
    os.kill(proc.pid, signal.SIGINT)
    second = proc.communicate(timeout=120)[0].decode()
    assert manifest(run_dir)["status"] == "interrupted"
    # the model the first run finished with went aside with its checkpoint: the folder holds no model now
    aside = list(run_dir.glob("superseded-*"))
    assert len(aside) == 1 and not [name for name in finals if (run_dir / name).exists()]
    assert {name: (aside[0] / name).read_bytes() for name in finals} == old_finals
    assert "the model and figures an earlier run finished with (adapter_model.safetensors, adapter_config.json" in second

    third = run_cli_subprocess(*argv, cwd=project, env=env_for(tiny_model))
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    assert "resuming" not in third.stdout and "Resuming training from checkpoint" not in third.stdout
    done = manifest(run_dir)
    assert done["status"] == "completed" and done["start"] == "run" and done["resumed_from"] is None
    assert done["datasets"]["huanhuan"]["sha256"] != old_sha
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and next(e["step"] for e in state["log_history"] if "loss" in e) == 1
    assert (run_dir / "checkpoint-3" / "adapter_model.safetensors").read_bytes() != old_adapter
    # the old data's checkpoint was moved aside when the new data's first attempt started, which said where
    moved = list(run_dir.glob("superseded-*/checkpoint-3"))
    assert len(moved) == 1 and (moved[0] / "adapter_model.safetensors").read_bytes() == old_adapter
    assert f"moved aside to {moved[0].parent}" in second


def test_sigkill_of_run_takes_the_trainer_with_it_and_the_next_run_resumes(project, tiny_model):
    out_root = project / "saves" / "killed"
    run_dir = out_root / "sft-huanhuan" / "sft"
    # A quiet trainer: it writes nothing to the dead pipe, so nothing but its owner's watch can stop it.
    argv = ["run", "sft-huanhuan", "--smoke", "--output-root", str(out_root), "--set", "max_steps=60",
            "--set", "save_steps=10", "--set", "logging_steps=1000", "--set", "disable_tqdm=true"]
    proc = start(project, tiny_model, argv, LLAMAFACTORY_VERBOSITY="ERROR", TRANSFORMERS_VERBOSITY="error")
    wait_for(lambda: (run_dir / "checkpoint-10" / "trainer_state.json").is_file(), proc, "checkpoint-10")
    assert processes_with(str(out_root)), "the trainer should be running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert_nothing_left(str(out_root))
    # the file still says running; whoever reads it is told its owner is gone
    assert manifest(run_dir)["status"] == "running"
    from llf_recipes import manifest as manifests

    assert manifests.read(run_dir)["status"] == "abandoned"
    saved = max(int(p.name.split("-")[1]) for p in run_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file())
    predicted = run_cli_subprocess(*argv, "--dry-run", cwd=project, env=env_for(tiny_model))
    assert f"would resume: the last attempt stopped (abandoned); resuming from checkpoint-{saved}" in predicted.stdout
    again = run_cli_subprocess(*argv, cwd=project, env=env_for(tiny_model))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"the last attempt stopped (abandoned); resuming from checkpoint-{saved}" in again.stdout
    assert "which ended without releasing it; taken over" in again.stderr  # the stale lock, reported
    data = manifest(run_dir)
    assert data["status"] == "completed" and data["start"] == "resume"
    assert json.loads((run_dir / "trainer_state.json").read_text())["global_step"] == 60


def test_a_process_still_working_in_the_stage_directory_is_refused_by_pid(project, tiny_model):
    """A trainer whose `run` and watchdog were both killed (an OOM killer could) lives on, re-parented to init; it
    names the stage's YAML on its command line. Whatever process does that holds the directory: the next run stops."""
    out_root = project / "saves" / "orphan"
    yaml = out_root / "sft-huanhuan" / "sft" / "llf-sft.yaml"
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "train", str(yaml)],
                              start_new_session=True)
    try:
        refused = run_cli_subprocess("run", "sft-huanhuan", "--smoke", "--output-root", str(out_root), cwd=project,
                                     env=env_for(tiny_model))
        assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
        assert f"a process from an earlier run still works in {yaml.parent}: pid {orphan.pid}" in refused.stderr
        assert f"kill {orphan.pid}" in refused.stderr
        assert not (yaml.parent / "llf-run.json").exists()
    finally:
        orphan.kill()
        orphan.wait()


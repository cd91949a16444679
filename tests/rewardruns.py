"""A reward model trained by the rm stage of `rlhf-ultrafeedback --smoke` (3 CPU steps through llamafactory-cli on the
tiny model), built once per test session under the base temp directory and reused by every module that asks."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli_subprocess

ENV = {"DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="session")
def reward_run(tmp_path_factory, tiny_model) -> Path:
    """The rm stage's output directory (LoRA adapter + value head, manifest)."""
    root = tmp_path_factory.getbasetemp() / "reward-run"
    run_dir = root / "saves" / "rlhf-ultrafeedback" / "rm"
    if (root / "done").is_file():
        return run_dir
    env = {**ENV, "LLF_RECIPES_CACHE": str(tiny_model.parent)}
    proc = run_cli_subprocess("prepare", "--recipe", "rlhf-ultrafeedback", "--sample", "--data-dir", root / "data", env=env)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli_subprocess("run", "rlhf-ultrafeedback", "--smoke", "--stage", "rm", "--output-root", root / "saves",
                              "--set", f"dataset_dir={root / 'data'}", cwd=root, env=env, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (root / "done").write_text("")
    return run_dir

"""Real tiny-model runs shared by the eval, report and merge tests.

`llf-recipes run zhihu --smoke` trains sft then dpo (3 CPU steps each, through llamafactory-cli) with a quarter of the
rows held out and evaluated every step; `export` merges the dpo adapter into a standalone model; `eval` scores all
three. The fixtures import into several test modules, so each builds under the session's base temp directory and
leaves a marker: whichever module asks first builds, the others reuse.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import run_cli_subprocess

ENV = {"DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"}
HELD_OUT = ["--set", "val_size=0.25", "--set", "eval_strategy=steps", "--set", "eval_steps=1",
            # One row per eval batch: the trainer's eval_loss is then the plain mean of per-row losses.
            "--set", "per_device_eval_batch_size=1"]
RUN_NAMES = ("zhihu/sft", "zhihu/dpo", "zhihu/dpo-merged")


def _check(proc, what: str) -> None:
    assert proc.returncode == 0, f"{what} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="session")
def zhihu_runs(tmp_path_factory, tiny_model) -> Path:
    """saves/ with zhihu/sft, zhihu/dpo (LoRA adapters) and zhihu/dpo-merged (a full model)."""
    root = tmp_path_factory.getbasetemp() / "eval-runs"
    saves, data = root / "saves", root / "data"
    if (root / "done").is_file():
        return saves
    env = {**ENV, "LLF_RECIPES_CACHE": str(tiny_model.parent)}  # the tiny model the other tests use
    _check(run_cli_subprocess("prepare", "--recipe", "zhihu", "--sample", "--data-dir", data, env=env), "prepare")
    _check(run_cli_subprocess("run", "zhihu", "--smoke", "--output-root", saves, "--set", f"dataset_dir={data}",
                              *HELD_OUT, cwd=root, env=env, timeout=900), "run zhihu --smoke")
    _check(run_cli_subprocess("export", saves / "zhihu" / "dpo", env=env), "export")
    (root / "done").write_text("")
    return saves


@pytest.fixture(scope="session")
def evaluated(zhihu_runs) -> dict:
    """`eval saves/` once: the results it wrote to saves/evaluation_results.json."""
    results = zhihu_runs / "evaluation_results.json"
    marker = zhihu_runs.parent / "evaluated"
    if not marker.is_file():
        proc = run_cli_subprocess("eval", zhihu_runs, "--max-generation-samples", "2", "--max-new-tokens", "6",
                                  env=ENV, timeout=900)
        _check(proc, "eval")
        assert "zhihu/dpo" in proc.stdout and "pref acc" in proc.stdout  # the printed table
        # Not a terminal: no redrawn bar, one line per run scored (on stderr), the engine's output in the log
        assert "\r" not in proc.stderr and re.search(r"^eval zhihu/dpo: \d+ sequence\(s\) scored in ", proc.stderr, re.MULTILINE)
        assert (zhihu_runs / "llf-eval.log").is_file()
        marker.write_text("")
    return json.loads(results.read_text(encoding="utf-8"))


def poisoned_env(tmp_path) -> dict[str, str]:
    """PYTHONPATH where importing torch, transformers, llamafactory or mergekit fails: for verbs that must not."""
    import os

    d = tmp_path / "poison"
    for mod in ("torch", "transformers", "llamafactory", "mergekit"):
        (d / mod).mkdir(parents=True, exist_ok=True)
        (d / mod / "__init__.py").write_text(f"raise ImportError('{mod} imported')\n")
    return {"PYTHONPATH": os.pathsep.join([str(d), os.environ.get("PYTHONPATH", "")])}


STANDIN_ANSWER = "<reasoning>\n72\n</reasoning>\n<answer>\n72\n</answer>"


@pytest.fixture(scope="session")
def standin_grpo_run(tmp_path_factory, tiny_model) -> Path:
    """A GRPO run of the TRL backend on CPU (two steps) whose model is the fixed-answer stand-in (standin.py): every
    completion is STANDIN_ANSWER, so accuracy on any set is known in advance."""
    pytest.importorskip("trl")
    import standin

    root = tmp_path_factory.getbasetemp() / "grpo-standin"
    run_dir = root / "out" / "grpo-gsm8k" / "grpo"
    if (root / "done").is_file():
        return run_dir
    root.mkdir(parents=True, exist_ok=True)
    model = standin.build(root / "standin", tiny_model, STANDIN_ANSWER)
    _check(run_cli_subprocess("prepare", "gsm8k_grpo", "--sample", "--data-dir", "data", cwd=root, env=ENV), "prepare")
    sets = [f"model_name_or_path={model}", "trust_remote_code=true", "rollout_batch_size=2", "global_batch_size=2",
            "micro_batch_size=4", "grpo.num_generations=2", "grpo.max_steps=2", "grpo.max_completion_length=48",
            "grpo.save_steps=2"]
    argv = ["run", "grpo-gsm8k", "--backend", "trl", "--device", "cpu", "--output-root", "out"]
    for s in sets:
        argv += ["--set", s]
    _check(run_cli_subprocess(*argv, cwd=root, env=ENV, timeout=900), "run grpo-gsm8k (TRL, stand-in model)")
    (root / "done").write_text("")
    return run_dir

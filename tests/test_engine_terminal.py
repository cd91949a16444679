"""What a user sees, for real on the tiny model: the README's first command twice, a quiet two-stage run with its
progress and summary (the whole engine output in the log), and a failing stage's last lines."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import ROOT, run_cli_subprocess

from llf_recipes.console import is_shown

pytestmark = pytest.mark.engine


def env_for(tiny_model: Path) -> dict[str, str]:
    return {"LLF_RECIPES_CACHE": str(tiny_model.parent), "TOKENIZERS_PARALLELISM": "false"}


def readme_first_command() -> list[list[str]]:
    """The llf-recipes commands of the README's first code block, as argv lists (the venv and pip parts left out)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)\n```", text, re.DOTALL).group(1)
    commands = []
    for part in block.split("&&"):
        argv = shlex.split(part)
        if argv and argv[0].endswith("bin/llf-recipes"):
            commands.append(argv[1:])
    return commands


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory, tiny_model):
    """The README's first command, twice, in a fresh directory: (directory, [(attempt, argv, process)]). The quiet
    two-stage run below reads the first attempt's `run`; the commands stop at the first failure."""
    root = tmp_path_factory.mktemp("readme")
    done = []
    for attempt in (1, 2):
        for argv in readme_first_command():
            proc = run_cli_subprocess(*argv, cwd=root, env=env_for(tiny_model))
            done.append((attempt, argv, proc))
            if proc.returncode != 0:
                return root, done
    return root, done


def test_the_readmes_first_command_runs_twice_in_a_fresh_directory(readme_runs):
    commands = readme_first_command()
    assert [c[0] for c in commands] == ["prepare", "run", "export", "ask"]
    root, done = readme_runs
    assert [(attempt, argv) for attempt, argv, _ in done] == [(a, c) for a in (1, 2) for c in commands]
    answers = []
    for attempt, argv, proc in done:
        assert proc.returncode == 0, f"attempt {attempt}: {argv}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        if argv[0] == "export":
            assert "merged model: " in proc.stdout and "dpo-merged" in proc.stdout
            if attempt == 2:
                assert "already exported from" in proc.stdout and "llamafactory-cli export" not in proc.stdout
        if argv[0] == "run" and attempt == 2:
            assert "stage sft: skipped" in proc.stdout and "stage dpo: skipped" in proc.stdout
        if argv[0] == "ask":
            assert proc.stdout.strip(), "ask printed no answer"
            assert proc.stderr == ""  # the answer alone: the engine's output is in the log
            answers.append(proc.stdout)
    assert len(answers) == 2
    assert (root / "saves" / "smoke" / "zhihu" / "dpo-merged" / "llf-ask.log").stat().st_size > 0


OURS = re.compile(r"^(\[\d/\d\] |engine (warning|error): |zhihu: |model: |next:|  |log: |building the tiny |$)")


def test_a_smoke_run_shows_our_lines_progress_and_a_summary_and_logs_everything(readme_runs, tiny_model):
    """The first `run zhihu --smoke` in a fresh directory (the README's, after its `prepare --recipe zhihu`)."""
    tmp_path, done = readme_runs
    env = env_for(tiny_model)
    prepare, (argv, proc) = done[0][1], next((a, p) for _, a, p in done if a[0] == "run")
    assert prepare[:3] == ["prepare", "--recipe", "zhihu"] and argv == ["run", "zhihu", "--smoke"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) <= 40, "\n".join(lines)
    strangers = [line for line in lines if not OURS.match(line) and not is_shown(line)]
    assert not strangers, strangers
    assert not any("[INFO" in line or "input_ids" in line for line in lines)
    for i, stage in ((1, "sft"), (2, "dpo")):
        assert re.search(rf"^\[{i}/2\] {stage}: step 3/3, loss [\d.]+, lr [\d.e+-]+, elapsed \d+:\d\d$", proc.stderr, re.MULTILINE)
    assert re.search(r"^zhihu: 2 of 2 stage\(s\) completed in \d+:\d\d \(smoke run\)$", proc.stdout, re.MULTILINE)
    assert re.search(r"^  dpo  completed +\d+:\d\d  mean loss [\d.]+$", proc.stdout, re.MULTILINE)
    assert "  llf-recipes export saves/smoke/zhihu/dpo   # merge into a standalone model" in proc.stdout
    assert "  llf-recipes report saves/smoke/zhihu" in proc.stdout
    log = (tmp_path / "saves" / "smoke" / "zhihu" / "sft" / "llf-sft.log").read_text()
    assert log.startswith("==== llf-recipes attempt 1 · ")
    assert "[INFO|" in log and "input_ids" in log and "Training completed" in log

    verbose = run_cli_subprocess("run", "zhihu", "--smoke", "--stage", "dpo", "--force", "--verbose", cwd=tmp_path,
                                 env=env)
    assert verbose.returncode == 0 and "[INFO|" in verbose.stdout and "input_ids" in verbose.stdout
    log = (tmp_path / "saves" / "smoke" / "zhihu" / "dpo" / "llf-dpo.log").read_text()
    assert "==== llf-recipes attempt 2 · " in log and log.count("Training completed") == 2


def test_a_failing_stage_shows_the_engines_last_lines_and_the_log(failing_sft_run):
    # a LoRA target the model does not have: every check before launch passes, peft refuses it in the engine
    tmp_path, proc = failing_sft_run  # conftest: `run sft-huanhuan --smoke --set lora_target=nosuchmodule`
    assert proc.returncode not in (0, 2, 130)
    log = "saves/smoke/sft-huanhuan/sft/llf-sft.log"
    assert "--- last 20 lines of " + log + " ---" in proc.stderr
    assert f"stage sft: full log {log}" in proc.stderr
    tail = proc.stderr.split(" ---\n", 1)[1].split("\n---\n")[0].splitlines()
    last_in_log = [line for line in (tmp_path / log).read_text().splitlines() if line.strip()][-1]
    assert tail[-1] == f"  {last_in_log}"
    assert any("nosuchmodule" in line for line in tail)  # the engine's own reason is among the lines shown
    assert "sft-huanhuan: 0 of 1 stage(s) completed" in proc.stdout and f"log: {log}" in proc.stdout

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

from llf_recipes.catalog import Catalog
from llf_recipes.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "llf_recipes" / "samples"

# One torch thread per process, in this process (torch is imported later) and in every trainer, engine and verb the
# tests start (they inherit it; the ssh launcher forwards OMP_*). The tiny model's tensors are too small for intra-op
# threads to pay: on a 2-core machine a trainer's second thread only contends with whatever else runs (its own `run`
# parent, a second rank, a daemon), and a smoke step took 4 s instead of well under one. Set it outside to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The tests that press Ctrl-C send SIGINT to the commands they start. A suite started in the background by a shell
# without job control (`cmd &` in a script, nohup) inherits SIGINT ignored, and so would every command it starts: a
# handler here makes exec reset it to the default in them, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def cli(capsys):
    """Drive the real CLI entry point in-process; returns (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli_main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.discover(project_dir=ROOT)


def run_cli_subprocess(*argv: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llf_recipes", *map(str, argv)],
        cwd=cwd or ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    pytest.importorskip("llamafactory", reason="needs the train extra (llamafactory + torch)")
    from llf_recipes.smoke import tiny_model_path

    cache = os.environ.get("LLF_RECIPES_CACHE") or tmp_path_factory.mktemp("cache")
    return tiny_model_path(cache)


def make_data_dir(path: Path, catalog: Catalog, names: list[str]) -> Path:
    """A LLaMA-Factory dataset_dir holding the bundled samples of `names` and their entries."""
    path.mkdir(parents=True, exist_ok=True)
    info = {}
    for name in names:
        ds = catalog.dataset(name)
        shutil.copyfile(SAMPLES / ds.sample, path / ds.entry["file_name"])
        info[name] = ds.entry
    (path / "dataset_info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def processes_with(marker: str) -> list[str]:
    """Live processes whose command line mentions `marker` (the test's unique tmp path)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            found.append(f"{d}: {cmd[:160]}")
    return found


def assert_nothing_left(marker: str) -> None:
    left = []
    deadline = time.time() + 5  # the sshd session's last exit may lag the client by a moment
    while time.time() < deadline:
        left = processes_with(marker)
        if not left:
            return
        time.sleep(0.2)
    raise AssertionError("processes left behind:\n" + "\n".join(left))


@pytest.fixture(scope="session")
def ppo_engine(tiny_model) -> Path:
    """The llamafactory-ppo engine's interpreter in the tests' cache, installed by `llf-recipes engine install` when
    missing (uv: about 35 s with a cold uv cache, a few seconds warm)."""
    env = {"LLF_RECIPES_CACHE": str(tiny_model.parent)}
    path = run_cli_subprocess("engine", "path", "llamafactory-ppo", env=env)
    if path.returncode != 0:
        proc = run_cli_subprocess("engine", "install", "llamafactory-ppo", env=env, timeout=1800)
        assert proc.returncode == 0, proc.stderr[-3000:]
        path = run_cli_subprocess("engine", "path", "llamafactory-ppo", env=env)
    assert path.returncode == 0, path.stderr
    return Path(path.stdout.strip())


# ------------------------------------------------------------------ smoke runs shared across modules
# Tests in several modules run the very same command on the tiny model; these fixtures run it once per session.

SMOKE_RECIPES = ["pt-belle", "sft-huanhuan", "sft-huanhuan-full", "sft-belle", "rlhf-ultrafeedback", "dpo-ultrafeedback",
                 "orpo-ultrafeedback", "simpo-ultrafeedback", "kto-ultrafeedback", "zhihu"]


def smoke_env(tiny_model: Path) -> dict[str, str]:
    return {"LLF_RECIPES_CACHE": str(tiny_model.parent), "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory, tiny_model) -> Path:
    """A project directory with every bundled sample of SMOKE_RECIPES prepared into data/, as `prepare --sample`
    leaves it. A `run RECIPE --smoke` there trains once and is skipped, completed, for whichever test asks next; a test
    that changes a data file puts it back or owns that recipe, and anything else it runs writes under its own
    --output-root."""
    root = tmp_path_factory.mktemp("project")
    for recipe in SMOKE_RECIPES:
        proc = run_cli_subprocess("prepare", "--recipe", recipe, "--sample", cwd=root, env=smoke_env(tiny_model))
        assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture(scope="session")
def failing_sft_run(tmp_path_factory, tiny_model) -> tuple[Path, subprocess.CompletedProcess]:
    """`run sft-huanhuan --smoke` in a fresh directory with a LoRA target the model does not have: every check before
    launch passes, peft refuses it in the engine. Returns (directory, the run's process)."""
    root = tmp_path_factory.mktemp("failing")
    env = smoke_env(tiny_model)
    assert run_cli_subprocess("prepare", "huanhuan", "--sample-data", cwd=root, env=env).returncode == 0
    proc = run_cli_subprocess("run", "sft-huanhuan", "--smoke", "--set", "lora_target=nosuchmodule", cwd=root, env=env)
    return root, proc

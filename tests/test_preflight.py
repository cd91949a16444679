"""The machine check before a run: devices for the layout, bf16, the packages a stage needs in the engine's own
environment, free disk. Each problem stops `run` before anything is written or started, with its fix; `--dry-run`
shows the same problems and plans anyway.

The devices come from a stand-in `nvidia-smi` on PATH (the real one's CSV output and its no-driver failure); the
engine's environment is the system Python (`run --engine llamafactory=PYTHON`, and for `doctor` a `llamafactory-cli`
on PATH run by it), which lacks the optional packages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llf_recipes import preflight

NO_DRIVER = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."


def fake_smi(bin_dir: Path, csv: str | None) -> None:
    """`nvidia-smi --query-gpu=index,name,compute_cap --format=csv,noheader` as the driver answers it."""
    body = f"print({csv!r}, end='')" if csv is not None else f"print({NO_DRIVER!r}); raise SystemExit(9)"
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!{sys.executable}\n{body}\n")
    script.chmod(0o755)


@pytest.fixture
def machine(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(work)
    return bin_dir, work


def system_python_without(*modules: str) -> str:
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None or os.path.realpath(python) == os.path.realpath(sys.executable):
        pytest.skip("needs a system Python beside the test environment")
    code = "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in sys.argv[1:]))"
    if subprocess.run([python, "-c", code, *modules], check=False).returncode != 0:
        pytest.skip(f"the system Python has one of {modules}")
    return python


def fake_engine(bin_dir: Path, python: str) -> Path:
    """A llamafactory-cli run by `python`; if anything ever starts it, it leaves a mark."""
    mark = bin_dir / "started"
    script = bin_dir / "llamafactory-cli"
    script.write_text(f"#!{python}\nopen({str(mark)!r}, 'w').write('started')\n")
    script.chmod(0o755)
    return mark


def test_no_gpu_for_gpus_is_refused_with_the_fix(cli, machine):
    bin_dir, work = machine
    fake_smi(bin_dir, None)
    code, _, err = cli("run", "sft-huanhuan", "--gpus", "0")
    assert code == 2
    assert f"error: --gpus 0: GPU 0 not found; this machine has no CUDA device (nvidia-smi failed: {NO_DRIVER})" in err
    assert "fix: try the recipe on CPU with --smoke" in err
    assert "nothing was written or launched" in err
    assert list(work.iterdir()) == []


def test_fewer_gpus_than_named_suggest_the_ones_there(cli, machine):
    bin_dir, work = machine
    fake_smi(bin_dir, "0, NVIDIA A100-SXM4-80GB, 8.0\n1, NVIDIA A100-SXM4-80GB, 8.0\n")
    code, _, err = cli("run", "zhihu", "--gpus", "2,3")
    assert code == 2 and "GPU 2, 3 not found; this machine has 2 CUDA device(s)" in err and "fix: use --gpus 0,1" in err
    assert list(work.iterdir()) == []


def test_bf16_on_an_older_gpu_is_refused_with_fp16_as_the_fix(cli, machine):
    bin_dir, work = machine
    fake_smi(bin_dir, "0, Tesla V100-SXM2-16GB, 7.0\n")
    code, _, err = cli("run", "sft-belle", "--gpus", "0")
    assert code == 2
    assert "bf16 needs compute capability 8.0 or newer: GPU 0 (Tesla V100-SXM2-16GB, compute capability 7)" in err
    assert "fix: --set precision=fp16" in err
    assert list(work.iterdir()) == []
    code, _, err = cli("run", "sft-belle", "--gpus", "0", "--set", "precision=fp16")
    assert "bf16" not in err and "machine check" not in err  # past the check (then stopped by the missing data)


def test_missing_bitsandbytes_and_deepspeed_in_the_engines_environment(cli, machine):
    bin_dir, work = machine
    python = system_python_without("bitsandbytes", "deepspeed")
    mark = fake_engine(bin_dir, python)
    fake_smi(bin_dir, "0, NVIDIA H100 80GB HBM3, 9.0\n1, NVIDIA H100 80GB HBM3, 9.0\n")
    engine = f"llamafactory={python}"  # the stages' engine environment: an interpreter without those packages
    code, _, err = cli("run", "sft-huanhuan", "--gpus", "0", "--engine", engine)  # QLoRA: 4-bit through bitsandbytes
    assert code == 2
    assert f"stage sft needs bitsandbytes, which is not installed for the engine ({python})" in err
    assert "fix: pip install bitsandbytes" in err
    assert "engine llamafactory: llamafactory" in err  # nor the engine itself: all problems at once
    code, _, err = cli("run", "sft-huanhuan-full", "--gpus", "0,1", "--engine", engine)  # full tuning under DeepSpeed
    assert code == 2
    assert f"stage sft needs deepspeed, which is not installed for the engine ({python})" in err
    assert "fix: pip install deepspeed" in err
    assert not mark.exists() and list(work.iterdir()) == []


def test_low_disk_is_refused_with_the_fix(cli, machine, monkeypatch):
    bin_dir, work = machine
    fake_smi(bin_dir, "0, NVIDIA H100 80GB HBM3, 9.0\n")
    monkeypatch.setattr(preflight, "free_bytes", lambda path: 2 * preflight.GIB)
    code, _, err = cli("run", "sft-huanhuan-full", "--gpus", "0", "--output-root", "big")
    assert code == 2
    # Qwen2.5-0.5B in bf16 is about 1 GB; full tuning keeps the model and two checkpoints with optimizer state
    assert "error: big: 2.0 GiB free, the stages need about 10.5 GiB" in err
    assert "fix: free some space, or --output-root DIR on a larger disk" in err
    assert list(work.iterdir()) == []


def test_every_problem_at_once_and_dry_run_shows_them_but_plans(cli, machine, monkeypatch):
    bin_dir, work = machine
    assert list(work.iterdir()) == []
    fake_smi(bin_dir, "0, Tesla T4, 7.5\n")
    monkeypatch.setattr(preflight, "free_bytes", lambda path: 0)
    code, out, err = cli("run", "sft-huanhuan-full", "--gpus", "0,1", "--dry-run")
    assert code == 1 and "argv:" in out  # the whole plan, and an exit status a script can gate on
    assert "# machine: 3 problem(s) `run` would stop on:" in out
    assert "GPU 1 not found" in out and "bf16 needs compute capability" in out and "GiB free" in out
    code, out, err = cli("run", "sft-huanhuan-full", "--gpus", "0,1")
    assert code == 2 and "the machine check found 3 problem(s)" in err
    assert list(work.iterdir()) == []


def test_the_cluster_layout_is_left_to_doctor(cli, machine):
    code, out, _ = cli("run", "zhihu", "--hostfile", "2node-8gpu", "--dry-run")
    assert code == (1 if "would stop on" in out else 0) and "# machine: the stages run on other hosts; `llf-recipes doctor --hostfile FILE`" in out


def test_a_smoke_run_needs_no_gpu_and_no_optional_package(catalog, tmp_path, monkeypatch):
    import argparse

    from llf_recipes.cli.run import build_plans

    args = argparse.Namespace(name="sft-huanhuan-full", smoke=True, dry_run=True, output_root=None, overrides=[],
                              allow=[], stage=None, from_stage=None, nccl=None, backend=None, engine=[])
    plans, _ = build_plans(args, catalog)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi at all
    assert preflight.check_stages(plans) == []


def test_doctor_lists_devices_without_torch_and_fails_on_a_package_recipes_need(cli, machine):
    bin_dir, _ = machine
    fake_smi(bin_dir, "0, Tesla V100-SXM2-16GB, 7.0\n1, NVIDIA A100-SXM4-80GB, 8.0\n")
    code, out, _ = cli("doctor")
    assert "ok    cuda:0: Tesla V100-SXM2-16GB, compute capability 7, no bf16 (--set precision=fp16)" in out
    assert "ok    cuda:1: NVIDIA A100-SXM4-80GB, compute capability 8, bf16" in out
    python = system_python_without("bitsandbytes", "deepspeed")
    fake_engine(bin_dir, python)
    code, out, err = cli("doctor")
    assert code == 1
    line = next(line for line in out.splitlines() if "bitsandbytes:" in line)
    m = re.match(rf"  error bitsandbytes: not installed for the engine \({re.escape(python)}\); (\d+) recipe\(s\) need it", line)
    assert m and int(m.group(1)) >= 8, line  # the QLoRA recipes of the pack
    assert "dpo-ultrafeedback, kto-ultrafeedback" in line and "fix: pip install bitsandbytes" in out
    assert "bitsandbytes" in err


def test_doctor_imports_no_torch():
    code = "import sys; from llf_recipes.cli import main; main(['doctor']); sys.exit(7 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, check=False).returncode == 0


def test_device_auto_is_what_this_machine_has(cli, machine):
    bin_dir, _ = machine
    fake_smi(bin_dir, "0, NVIDIA A100-SXM4-80GB, 8.0\n")
    code, out, _ = cli("run", "zhihu", "--device", "auto", "--dry-run")
    assert code == (1 if "would stop on" in out else 0) and "on 1 node x 1 GPU" in out and "CUDA_VISIBLE_DEVICES=0" in out
    fake_smi(bin_dir, None)  # no driver answers: CPU
    code, out, _ = cli("run", "zhihu", "--device", "auto", "--dry-run")
    assert code == (1 if "would stop on" in out else 0) and "CPU process" in out and "    CUDA_VISIBLE_DEVICES=\n" in out


@pytest.mark.parametrize(("listed", "seen"), [(None, 2), ("", 0), ("-1", 0), ("1", 1), ("0,1", 2), ("0,5,1", 1),
                                              ("GPU-8f2c", 1)])
def test_the_cuda_devices_a_process_sees_follow_cuda_visible_devices(monkeypatch, listed, seen):
    from llf_recipes import preflight

    two = preflight.Inventory((preflight.Gpu(0, "A", 9.0), preflight.Gpu(1, "B", 9.0)), "test")
    monkeypatch.setattr(preflight, "cuda_inventory", lambda: two)
    if listed is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", listed)
    assert preflight.visible_cuda_devices() == seen


def test_a_missing_engine_gets_the_install_that_gives_its_own_versions(cli, machine):
    """The PPO engine needs LLaMA-Factory 0.9.3 from its lock: the fix is `engine install`, not the train extra (which
    installs 0.9.5); the main engine's fix is the train extra."""
    bin_dir, _ = machine
    python = system_python_without("llamafactory")
    fake_smi(bin_dir, "0, NVIDIA H100 80GB HBM3, 9.0\n")
    _code, out, err = cli("run", "rlhf-ultrafeedback", "--gpus", "0", "--dry-run", "--engine", f"llamafactory-ppo={python}")
    text = out + err
    ppo = text.split(f"error: engine llamafactory-ppo: llamafactory, transformers, trl, peft, torch not installed for "
                     f"{python}\n")[1].splitlines()[0]
    assert "fix: llf-recipes engine install llamafactory-ppo builds its own environment from its lock" in ppo
    assert "llamafactory 0.9.3" in ppo and "trl 0.9.6" in ppo and "locks/llamafactory-ppo.txt" in ppo
    assert ".[train]" not in ppo
    _code, out, err = cli("run", "sft-huanhuan", "--gpus", "0", "--dry-run", "--engine", f"llamafactory={python}")
    assert f'fix: pip install -e ".[train]" for {python}' in out + err

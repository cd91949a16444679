"""Multi-node runs on one machine: an sshd of the test's own on 127.0.0.1/127.0.0.2, a hostfile with both, two CPU
ranks over gloo started through `--launcher ssh` (node 0 locally, node 1 over ssh); failure, Ctrl-C, preflight,
`--launcher print` and `doctor --hostfile` against it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, assert_nothing_left, make_data_dir, processes_with, run_cli_subprocess
from loopback import free_port, sshd_server, wait_for

from llf_recipes.errors import LlfError
from llf_recipes.launch import nccl_env
from llf_recipes.launchers.ssh import forwarded_env
from llf_recipes.launchers.watchdog import STOP_GRACE_S, WATCHDOG

SSHD = "/usr/sbin/sshd"
CPU_QLORA_OFF = ["~quantization_bit", "~quantization_method", "~quantization_type", "~double_quantization"]
ENV = {"DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"}


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def rank_pid(marker: str, rank: int) -> int | None:
    """The torch worker (LLaMA-Factory's launcher.py under torchrun) with RANK=`rank` in this run."""
    for line in processes_with(marker):
        pid = int(line.split(":", 1)[0])
        if "launcher.py" in line and "torchrun" not in line:
            try:
                if process_env(pid).get("RANK") == str(rank):
                    return pid
            except OSError:
                continue
    return None


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    yield from sshd_server(tmp_path_factory)


@pytest.fixture
def hostfile(tmp_path) -> Path:
    p = tmp_path / "hosts"
    p.write_text("# two nodes on loopback\n127.0.0.1 slots=1\n127.0.0.2 slots=1\n")
    return p


def run_argv(tmp_path: Path, hostfile: Path, sshd: dict, data: Path, model, steps: int) -> list[str]:
    sets = [f"model_name_or_path={model}", f"dataset_dir={data}", f"max_steps={steps}", "cutoff_len=128",
            "logging_steps=1", f"save_steps={steps}", "preprocessing_num_workers=1", "report_to=none", *CPU_QLORA_OFF]
    argv = ["run", "sft-huanhuan", "--hostfile", hostfile, "--device", "cpu", "--launcher", "ssh",
            "--ssh-config", sshd["config"], "--output-root", tmp_path / "saves", "--master-port", free_port()]
    for s in sets:
        argv += ["--set", s]
    return [str(a) for a in argv]


def start_run(argv: list[str], out: Path) -> subprocess.Popen:
    with open(out, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "llf_recipes", *argv], cwd=ROOT, env={**os.environ, **ENV},
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def accepted_logins(sshd: dict) -> int:
    return sshd["log"].read_text().count("Accepted publickey")


# ---------------------------------------------------------------- real two-node training


@pytest.mark.engine
def test_two_nodes_train_over_ssh(sshd, hostfile, tiny_model, catalog, tmp_path):
    data = make_data_dir(tmp_path / "data", catalog, ["huanhuan"])
    logins = accepted_logins(sshd)
    proc = run_cli_subprocess(*run_argv(tmp_path, hostfile, sshd, data, tiny_model, 3), env=ENV)
    stage = tmp_path / "saves" / "sft-huanhuan" / "sft"
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert accepted_logins(sshd) > logins  # node 1 really went through ssh
    terminal = proc.stdout + proc.stderr
    for rank in (0, 1):
        log = (stage / f"llf-sft.node{rank}.log").read_text()
        # each node ran one rank of a world of two, and its trainer finished
        assert f"Process rank: {rank}, world size: 2, device: cpu" in log
        assert "Training completed" in log
        # the terminal gets our lines: where each node logs, and how each ended; the engine's chatter stays in the logs
        assert f"node {rank} (127.0.0.{rank + 1}) finished, log {stage / f'llf-sft.node{rank}.log'}" in proc.stdout
    assert "starting 2 node(s)" in proc.stdout
    assert "Process rank" not in terminal and "Training completed" not in terminal and "Running training" not in terminal
    assert not [line for line in terminal.splitlines() if line.startswith("[node") and "engine" not in line
                and "warning" not in line.lower() and "error" not in line.lower()]
    assert "[1/1] sft: step 3/3" in proc.stderr  # the progress, from the trainer log rank 0 writes
    state = __import__("json").loads((stage / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert (stage / "adapter_model.safetensors").is_file()
    assert "[node 1] " in (stage / "llf-sft.log").read_text()  # the combined log
    assert_nothing_left(str(tmp_path))


@pytest.mark.engine
def test_killing_one_rank_stops_the_other(sshd, hostfile, tiny_model, catalog, tmp_path):
    data = make_data_dir(tmp_path / "data", catalog, ["huanhuan"])
    out = tmp_path / "run.out"
    proc = start_run(run_argv(tmp_path, hostfile, sshd, data, tiny_model, 2000), out)
    marker = str(tmp_path)
    stage = tmp_path / "saves" / "sft-huanhuan" / "sft"
    try:
        def training(rank):
            log = stage / f"llf-sft.node{rank}.log"
            return log.exists() and "Running training" in log.read_text()
        wait_for(lambda: training(0) and training(1), 420, "both ranks to start training")
        victim = wait_for(lambda: rank_pid(marker, 1), 30, "the rank-1 worker")
        survivor = rank_pid(marker, 0)
        assert survivor is not None
        os.kill(victim, signal.SIGKILL)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = out.read_text(errors="replace")
    assert code != 0, text[-3000:]
    assert "node 1 (127.0.0.2) failed" in text, text[-3000:]
    assert str(stage / "llf-sft.node1.log") in text
    # the failing node's last lines, then where its whole log is; not every line the nodes printed
    assert f"lines of {stage / 'llf-sft.node1.log'} ---" in text, text[-3000:]
    assert "Running training" not in text.split("--- last ", 1)[0]  # before the tails: no engine chatter streamed
    assert not Path(f"/proc/{survivor}").exists() or "Z" in Path(f"/proc/{survivor}/stat").read_text().split()[2]
    assert_nothing_left(marker)


@pytest.mark.engine
def test_ctrl_c_stops_every_node(sshd, hostfile, tiny_model, catalog, tmp_path):
    data = make_data_dir(tmp_path / "data", catalog, ["huanhuan"])
    out = tmp_path / "run.out"
    proc = start_run(run_argv(tmp_path, hostfile, sshd, data, tiny_model, 2000), out)
    marker = str(tmp_path)
    try:
        wait_for(lambda: rank_pid(marker, 0) and rank_pid(marker, 1), 420, "both ranks to start")
        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = out.read_text(errors="replace")
    assert code == 130, text[-3000:]
    assert "interrupted" in text
    assert_nothing_left(marker)


@pytest.mark.engine
def test_sigkill_of_run_itself_leaves_nothing(sshd, hostfile, tiny_model, catalog, tmp_path):
    """Even when `llf-recipes run` cannot clean up, the closed pipes make every node's watchdog stop its tree."""
    data = make_data_dir(tmp_path / "data", catalog, ["huanhuan"])
    proc = start_run(run_argv(tmp_path, hostfile, sshd, data, tiny_model, 2000), tmp_path / "run.out")
    marker = str(tmp_path)
    try:
        wait_for(lambda: rank_pid(marker, 0) and rank_pid(marker, 1), 420, "both ranks to start")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        wait_for(lambda: not processes_with(marker), STOP_GRACE_S + 20, "every process of the run to end")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert_nothing_left(marker)


# ---------------------------------------------------------------- preflight, print, ray, doctor (no training)


def plan_argv(tmp_path: Path, hostfile: Path, *extra, device: str = "cpu") -> list[str]:
    data = tmp_path / "data"
    if not data.exists():
        from llf_recipes.catalog import Catalog

        make_data_dir(data, Catalog.discover(project_dir=ROOT), ["huanhuan"])
    argv = ["run", "sft-huanhuan", "--hostfile", hostfile, "--device", device, "--output-root", tmp_path / "saves",
            "--set", f"dataset_dir={data}", *extra]
    for s in CPU_QLORA_OFF:
        argv += ["--set", s]
    return [str(a) for a in argv]


def test_unreachable_host_is_named_before_anything_starts(sshd, hostfile, tmp_path):
    dead = free_port()  # nothing listens there
    cfg = tmp_path / "dead_ssh_config"
    cfg.write_text(sshd["config"].read_text().replace(f"Port {sshd['port']}", f"Port {dead}"))
    proc = run_cli_subprocess(*plan_argv(tmp_path, hostfile, "--launcher", "ssh", "--ssh-config", cfg), env=ENV)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "node 1 (127.0.0.2): not reachable over ssh" in proc.stderr
    assert "Connection refused" in proc.stderr
    assert "nothing was started" in proc.stderr and "fix:" in proc.stderr
    assert "node 0 (127.0.0.1)" not in proc.stderr  # the local node needs no ssh
    assert not list((tmp_path / "saves").rglob("*.node*.log"))


def test_busy_master_port_is_named_with_a_free_one(sshd, hostfile, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli_subprocess(*plan_argv(tmp_path, hostfile, "--launcher", "ssh", "--ssh-config", sshd["config"],
                                             "--master-port", str(port)), env=ENV)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"node 0 (127.0.0.1): MASTER_PORT {port} is in use" in proc.stderr
    assert "--master-port" in proc.stderr
    assert not list((tmp_path / "saves").rglob("*.node*.log"))


def test_launcher_print_gives_one_shell_line_per_node(hostfile, tmp_path):
    proc = run_cli_subprocess(*plan_argv(tmp_path, hostfile, "--launcher", "print", "--master-port", "29777"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("cd ")]
    assert len(lines) == 2
    config = tmp_path / "saves" / "sft-huanhuan" / "sft" / "llf-sft.yaml"
    for rank, line in enumerate(lines):
        assert line.startswith(f"cd {ROOT} && ")
        assert f"NODE_RANK={rank} " in line and "NNODES=2 " in line and "MASTER_ADDR=127.0.0.1 " in line
        assert "MASTER_PORT=29777 " in line and "FORCE_TORCHRUN=1 " in line and "NPROC_PER_NODE=1 " in line
        assert line.endswith(f"llamafactory-cli train {config}")
    assert "# node 1: 127.0.0.2" in proc.stdout
    assert config.is_file()  # the YAML the lines point at is written
    # the line runs as printed: a shell parses it back to the same words
    words = subprocess.run(["sh", "-c", f"printf '%s\\n' {lines[1].split(' && ', 1)[1]}"], check=True,
                           capture_output=True, text=True).stdout.split()
    assert words[-3].endswith("llamafactory-cli") and words[-2:] == ["train", str(config)]


def test_launcher_ray_without_ray_is_a_clear_error(hostfile, tmp_path):
    import importlib.util

    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed here")
    proc = run_cli_subprocess(*plan_argv(tmp_path, hostfile, "--launcher", "ray"))
    assert proc.returncode == 2
    assert "--launcher ray needs the `ray` package" in proc.stderr
    assert "ray start --head" in proc.stderr


@pytest.fixture
def ray_importable(tmp_path, monkeypatch):
    """ray is optional and not installed by the test extras: a stand-in package makes it importable in-process, so
    the driver command can be checked; the real Ray path needs GPUs (see test_ray_refuses_cpu_ranks)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        (tmp_path / "standin" / "ray").mkdir(parents=True)
        (tmp_path / "standin" / "ray" / "__init__.py").write_text("")
        monkeypatch.syspath_prepend(str(tmp_path / "standin"))


def ray_plan(catalog, hostfile, device="cuda", sets=()):
    from llf_recipes.hardware import parse_hostfile
    from llf_recipes.launch import plan_stage
    from llf_recipes.render import Overrides, Renderer

    layout = parse_hostfile(catalog.hostfile(hostfile), device=device)
    recipe = catalog.recipe("sft-huanhuan")
    overrides = Overrides.parse([*sets, *CPU_QLORA_OFF] if device == "cpu" else list(sets), recipe)
    return plan_stage(Renderer(recipe, layout, overrides, catalog).render_all(["sft"])[0])


def test_ray_driver_sets_use_ray_and_workers(ray_importable, catalog):
    """The Ray command: USE_RAY=1, ray_num_workers = the layout's world size, no torchrun variables."""
    from llf_recipes.launchers.ray import ray_driver

    argv, env = ray_driver(ray_plan(catalog, "2node-8gpu", sets=["master_addr=10.0.0.1"]))
    assert argv[-1] == "ray_num_workers=16" and argv[-3] == "train"
    assert env["USE_RAY"] == "1" and env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
    assert not {"FORCE_TORCHRUN", "NNODES", "NODE_RANK", "MASTER_PORT"} & set(env)


def test_ray_without_dashboard_needs_master_addr(ray_importable, catalog):
    import importlib.util

    from llf_recipes.launchers.ray import _RAY_DASHBOARD_DEPS, ray_driver

    if all(importlib.util.find_spec(m) is not None for m in _RAY_DASHBOARD_DEPS):
        pytest.skip("ray[default]'s dashboard packages are installed here")
    with pytest.raises(LlfError, match="asks Ray's dashboard") as exc:
        ray_driver(ray_plan(catalog, "2node-8gpu"))
    assert "ray[default]" in exc.value.fix and "master_addr" in exc.value.fix


def test_ray_refuses_cpu_ranks(ray_importable, catalog, hostfile):
    from llf_recipes.launchers.ray import ray_driver

    with pytest.raises(LlfError, match="reserves 10 CPUs") as exc:
        ray_driver(ray_plan(catalog, str(hostfile), device="cpu"))
    assert "--launcher ssh" in exc.value.fix


def test_doctor_reports_pins_and_hosts(sshd, hostfile, cli):
    code, out, err = cli("doctor", "--hostfile", hostfile, "--ssh-config", sshd["config"], "--device", "cpu")
    assert code == 0, out + err
    assert "llamafactory: 0.9.5" in out and "validation: snapshot of LLaMA-Factory 0.9.5" in out
    assert "127.0.0.1: local, slots=1" in out
    assert "127.0.0.2: answers over ssh, slots=1" in out


def test_doctor_names_an_unreachable_host(sshd, hostfile, cli, tmp_path):
    cfg = tmp_path / "dead_ssh_config"
    cfg.write_text(sshd["config"].read_text().replace(f"Port {sshd['port']}", f"Port {free_port()}"))
    code, out, err = cli("doctor", "--hostfile", hostfile, "--ssh-config", cfg)
    assert code == 1
    assert "error 127.0.0.2: not reachable over ssh" in out and "fix:" in out
    assert "127.0.0.2" in err


# ---------------------------------------------------------------- the watchdog and the pieces


def test_watchdog_stops_the_whole_tree_when_stdin_closes(tmp_path):
    """A grandchild in a session of its own (as torchrun starts its workers) dies too."""
    marker = str(tmp_path / "tree-marker")
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', {marker!r}], start_new_session=True)\n"
        "time.sleep(300)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(STOP_GRACE_S), sys.executable, "-c", script, marker],
                            stdin=subprocess.PIPE)
    wait_for(lambda: len(processes_with(marker)) == 3, 20, "the watchdog, the child and its detached grandchild")
    proc.stdin.close()
    proc.wait(timeout=STOP_GRACE_S + 10)
    assert_nothing_left(marker)


def test_watchdog_passes_the_exit_code_and_reaps_leftovers(tmp_path):
    marker = str(tmp_path / "leftover-marker")
    script = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', {marker!r}], start_new_session=True)\n"
        "sys.exit(3)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", WATCHDOG, "5", sys.executable, "-c", script], stdin=subprocess.PIPE)
    assert proc.wait(timeout=30) == 3  # stdin still open: the command ended by itself
    proc.stdin.close()
    assert_nothing_left(marker)


def test_forwarded_env_keeps_training_variables_and_drops_secrets():
    env = forwarded_env({"NCCL_DEBUG": "INFO", "HF_HOME": "/data/hf", "HF_TOKEN": "hf_x", "WANDB_API_KEY": "k",
                         "DISABLE_VERSION_CHECK": "1", "HOME": "/root", "SSH_AUTH_SOCK": "/tmp/a"})
    assert env == {"DISABLE_VERSION_CHECK": "1", "HF_HOME": "/data/hf", "NCCL_DEBUG": "INFO"}


def test_nccl_presets_with_an_interface():
    assert nccl_env("socket:eth0")["NCCL_SOCKET_IFNAME"] == "eth0"
    assert nccl_env("socket:eth0")["GLOO_SOCKET_IFNAME"] == "eth0"
    assert nccl_env("socket")["NCCL_IB_DISABLE"] == "1" and "NCCL_SOCKET_IFNAME" not in nccl_env("socket")
    assert nccl_env("ib:mlx5_0")["NCCL_IB_HCA"] == "mlx5_0"
    for bad in ("tcp", "socket:", ""):
        with pytest.raises(LlfError, match="not a preset"):
            nccl_env(bad)


def test_nccl_preset_in_the_plan(cli):
    code, out, err = cli("run", "sft-huanhuan", "--hostfile", "2node-8gpu", "--nccl", "socket:ens5", "--dry-run")
    assert code == (1 if "would stop on" in out else 0), err
    assert out.count("NCCL_SOCKET_IFNAME=ens5") == 2 and out.count("NCCL_IB_DISABLE=1") == 2
    code, _, err = cli("run", "sft-huanhuan", "--hostfile", "2node-8gpu", "--nccl", "tcp", "--dry-run")
    assert code == 2 and "--nccl 'tcp' is not a preset" in err


def test_cpu_hostfile_layout_counts_processes(tmp_path):
    from llf_recipes.hardware import parse_hostfile

    p = tmp_path / "hosts"
    p.write_text("a slots=2\nb slots=2\n")
    layout = parse_hostfile(p, device="cpu")
    assert layout.world_size == 4 and layout.per_node == 2
    assert layout.describe() == "2 nodes x 2 CPU processes = 4"
    p.write_text("a slots=1\n")
    assert parse_hostfile(p, device="cpu").describe() == "1 node x 1 CPU process"


def test_preflight_compares_slots_with_the_gpus_nvidia_smi_lists(hostfile, tmp_path):
    """No GPU here: a stand-in `nvidia-smi -L` listing two GPUs, on PATH for the local node 0."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-0)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-1)'\n")
    smi.chmod(0o755)
    hostfile.write_text("localhost slots=4\n")
    argv = plan_argv(tmp_path, hostfile, "--launcher", "ssh", device="cuda")
    proc = run_cli_subprocess(*argv, env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"node 0 (localhost): slots=4 ({hostfile}:1) but 2 GPUs visible there" in proc.stderr
    assert "set slots=2 for localhost" in proc.stderr


# ---------------------------------------------------------------- an llf-recipes verb as a stage on a remote node

PAIRS_RECIPE = """\
description: best vs worst answers as preference pairs, on whichever node the hostfile names
vars:
  scored: scored.jsonl
stages:
  - name: pairs
    verb: pairs
---
### pairs
scored: {{ scored }}
name: node_pairs
min_margin: 0.0

### output
output_dir: {{ output_dir }}
"""


def test_an_llf_stage_runs_with_the_nodes_interpreter_over_ssh(sshd, tmp_path):
    """The stage's command names the llf engine's interpreter (here --engine llf=PYTHON, a wrapper that notes each
    start), not the one `run` itself runs in; it is started on the remote node through ssh and does its work there."""
    import json

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "node-pairs.yaml").write_text(PAIRS_RECIPE)
    scored = tmp_path / "scored.jsonl"
    scored.write_text("".join(json.dumps({"index": i, "prompt": [{"role": "user", "content": f"q{i}"}], "system": None,
                                          "answers": ["good", "bad"], "scores": [2.0, -1.0]}) + "\n" for i in range(3)))
    node_python = tmp_path / "node-env" / "bin" / "python"
    node_python.parent.mkdir(parents=True)
    starts = tmp_path / "node-python.starts"
    node_python.write_text(f'#!/bin/sh\necho "$(hostname) $*" >> {starts}\nexec {sys.executable} "$@"\n')
    node_python.chmod(0o755)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.2 slots=1\n")
    logins = accepted_logins(sshd)
    common = ["run", "node-pairs", "--recipe-dir", tmp_path / "recipes", "--hostfile", hosts, "--device", "cpu",
              "--output-root", tmp_path / "saves", "--set", f"scored={scored}", "--engine", f"llf={node_python}"]
    proc = run_cli_subprocess(*common, "--dry-run", "--json", env=ENV)
    assert proc.returncode == 0, proc.stderr
    (planned,) = json.loads(proc.stdout)
    assert planned["nodes"][0]["host"] == "127.0.0.2"
    assert planned["nodes"][0]["argv"][:4] == [str(node_python), "-m", "llf_recipes", "pairs"]
    proc = run_cli_subprocess(*common, "--launcher", "ssh", "--ssh-config", sshd["config"], env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert accepted_logins(sshd) > logins  # the node was reached through ssh
    assert "-m llf_recipes pairs" in starts.read_text()  # and ran the stage with the interpreter it was given
    run_dir = tmp_path / "saves" / "node-pairs" / "pairs"
    assert len(json.loads((run_dir / "node_pairs.json").read_text())) == 3
    record = json.loads((run_dir / "llf-run.json").read_text())
    assert record["status"] == "completed" and record["engine"]["python"] == str(node_python)
    assert record["nodes"][0]["argv"][0] == str(node_python)

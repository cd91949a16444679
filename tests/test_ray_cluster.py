"""A real two-node Ray cluster on loopback (127.0.0.1 and 127.0.0.2, node 1 reached through the test's own sshd),
with `ray` from the registry: the run starts Ray on every node in the foreground, starts the driver only when both
nodes have registered, and leaves no Ray process behind; `--launcher ray` attaches to a cluster the test started and
leaves it as it was. EasyR1 needs GPUs, so a stand-in `verl.trainer.main` is the driver: it connects with
`ray.init(address="auto")`, runs one task on each node, and writes a checkpoint in EasyR1's layout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import easyr1_standin
import pytest
from conftest import ROOT, processes_with, run_cli_subprocess
from loopback import free_port, sshd_server, wait_for

pytest.importorskip("ray", reason="needs ray[default] (the dev extra)")

RAY = str(Path(sys.executable).parent / "ray")

STANDIN_MAIN = '''
import json, os, sys
import ray
import yaml
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(address="auto")
alive = [n for n in ray.nodes() if n["Alive"]]

@ray.remote(num_cpus=0)
def where():
    return ray.util.get_node_ip_address()

ips = ray.get([where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
               for n in alive])
if os.environ.get("STANDIN_HOLD"):  # a job that runs until it is stopped: a task on every node, then wait
    import time

    @ray.remote(num_cpus=0)
    def llf_held_task():
        time.sleep(600)

    held = [llf_held_task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
            for n in alive]
    time.sleep(5)
    open(os.environ["STANDIN_HOLD"], "w").write("holding")
    ray.get(held)
config = yaml.safe_load(open(sys.argv[1].split("=", 1)[1]))
ckpt = config["trainer"]["save_checkpoint_path"]
adapter = os.path.join(ckpt, "global_step_1", "actor", "lora_adapter")
os.makedirs(adapter, exist_ok=True)
for name in ("adapter_config.json", "adapter_model.safetensors"):
    open(os.path.join(adapter, name), "w").write("{}")
json.dump({"last_global_step": 1, "best_global_step": 1}, open(os.path.join(ckpt, "checkpoint_tracker.json"), "w"))
json.dump({"nodes": len(alive), "task_ips": sorted(ips), "address": os.environ.get("RAY_ADDRESS")},
          open(os.path.join(os.path.dirname(ckpt), "standin.json"), "w"))
print("stand-in EasyR1 saw", len(alive), "live Ray nodes", flush=True)
sys.exit(0 if len(alive) == 2 else 3)
'''


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    yield from sshd_server(tmp_path_factory)


@pytest.fixture
def ray_tmp():
    """A short temporary directory for Ray's sessions (its socket paths must stay under 108 characters); also the
    marker by which the test finds every Ray process this test started."""
    d = tempfile.mkdtemp(prefix="llfray", dir="/tmp")
    yield d
    for line in ray_processes(d):  # a failed or attaching test must not leave Ray running for the next one
        try:
            os.kill(int(line.split(":", 1)[0]), 9)
        except OSError:
            pass
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def project(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("prepare", "gsm8k_grpo", "--sample", "--data-dir", "data")[0] == 0
    easyr1_standin.make(tmp_path / "standin", STANDIN_MAIN)
    (tmp_path / "hosts").write_text("127.0.0.1 slots=1\n127.0.0.2 slots=1\n")
    return tmp_path


def run_env(project: Path, ray_tmp: str) -> dict[str, str]:
    return {"PYTHONPATH": f"{project / 'standin'}{os.pathsep}{ROOT}", "RAY_TMPDIR": ray_tmp,
            "RAY_USAGE_STATS_ENABLED": "0", "LLF_EASYR1_PYTHON": sys.executable}


def grpo_argv(project: Path, *extra: str) -> list[str]:
    return ["run", "grpo-gsm8k", "--backend", "easyr1", "--hostfile", str(project / "hosts"), "--device", "cpu",
            "--set", "rollout_batch_size=4", "--set", "global_batch_size=4", "--set", "micro_batch_size=4", *extra]


def ray_processes(ray_tmp: str, daemons_only: bool = False) -> set[str]:
    """Live processes of the Ray this test started: their command line or environment names its RAY_TMPDIR (Ray's
    task workers, `ray::IDLE`, show neither in their command line). With daemons_only, without the task workers that a
    driver brings and takes away."""
    found = set()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = Path(f"/proc/{d}/environ").read_bytes()
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z" or not (ray_tmp in cmd or f"RAY_TMPDIR={ray_tmp}".encode() in env):
            continue
        if daemons_only and (cmd.startswith("ray::") or "default_worker" in cmd):
            continue
        found.add(f"{d}: {cmd[:120]}")
    return found


def test_easyr1_stage_on_a_two_node_ray_cluster_started_over_ssh(sshd, project, ray_tmp):
    port = free_port()
    proc = run_cli_subprocess(*grpo_argv(project, "--launcher", "ssh", "--ssh-config", str(sshd["config"]),
                                         "--set", f"ray_port={port}"),
                              cwd=project, env=run_env(project, ray_tmp), timeout=420)
    run_dir = project / "saves" / "grpo-gsm8k" / "grpo"
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    seen = json.loads((run_dir / "standin.json").read_text())
    assert seen["nodes"] == 2 and seen["address"] == f"127.0.0.1:{port}"
    assert "127.0.0.2" in seen["task_ips"] and len(seen["task_ips"]) == 2  # a task really ran on node 1
    assert "waiting for 2 node(s) to register" in proc.stdout
    assert (run_dir / "llf-grpo.ray1.log").read_text().count("Ray runtime started") == 1
    # Ray's and the driver's chatter stays in their logs; the terminal ends with how the driver's node ended
    assert "Ray runtime started" not in proc.stdout + proc.stderr
    closing = [line for line in proc.stdout.splitlines() if line.startswith("stage grpo: node 0 (127.0.0.1) ")]
    assert closing and closing[0].endswith(f"finished, log {run_dir.resolve() / 'llf-grpo.node0.log'}")
    assert json.loads((run_dir / "llf-run.json").read_text())["status"] == "completed"
    wait_for(lambda: not ray_processes(ray_tmp), 30, "every Ray process of the run to end")
    assert not processes_with(f"--port={port}")


def start_ray(*args: str, env: dict[str, str]) -> None:
    subprocess.run([RAY, "start", *args, "--num-gpus=0", "--disable-usage-stats"], check=True, env={**os.environ, **env},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def ray_status_nodes(address: str, env: dict[str, str]) -> int:
    out = subprocess.run([RAY, "status", f"--address={address}"], capture_output=True, text=True, check=False,
                         env={**os.environ, **env}, timeout=60).stdout
    active = out.split("Active:", 1)[1].split("Pending:", 1)[0] if "Active:" in out else ""
    return sum(1 for line in active.splitlines() if "node_" in line)


def test_launcher_ray_attaches_and_leaves_the_cluster_running(project, ray_tmp):
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {"RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    start_ray("--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--dashboard-port", str(free_port()),
              "--ray-client-server-port", str(free_port()), env=env)
    argv = grpo_argv(project, "--launcher", "ray", "--ray-address", address)

    # only the head is up: the run checks the cluster first, names the missing node and starts nothing
    proc = run_cli_subprocess(*argv, cwd=project, env=run_env(project, ray_tmp), timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 of 2 nodes registered (missing: 127.0.0.2)" in proc.stderr and "nothing was started" in proc.stderr
    run_dir = project / "saves" / "grpo-gsm8k" / "grpo"
    assert not (run_dir / "standin.json").exists()

    start_ray(f"--address={address}", "--node-ip-address=127.0.0.2", env=env)
    wait_for(lambda: ray_status_nodes(address, env) == 2, 60, "two nodes in `ray status`")
    before = ray_processes(ray_tmp, daemons_only=True)
    proc = run_cli_subprocess(*argv, cwd=project, env=run_env(project, ray_tmp), timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "attached to Ray 2." in proc.stdout and "it stays up after the run" in proc.stdout
    seen = json.loads((run_dir / "standin.json").read_text())
    assert seen["nodes"] == 2 and seen["address"] == address and "127.0.0.2" in seen["task_ips"]
    time.sleep(2)
    assert ray_processes(ray_tmp, daemons_only=True) == before  # not one Ray daemon started or stopped
    assert ray_status_nodes(address, env) == 2

    # Ctrl-C stops the run's own job (its tasks on both nodes end) and nothing else
    holding = project / "holding"
    with open(project / "held.out", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llf_recipes", *argv, "--force"], cwd=project, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **run_env(project, ray_tmp),
                                                                "STANDIN_HOLD": str(holding)}, start_new_session=True)
    try:
        wait_for(holding.exists, 180, "the job's tasks to run on both nodes")
        assert len(processes_with("llf_held_task")) == 2
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130, (project / "held.out").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    wait_for(lambda: not processes_with("llf_held_task"), 60, "the job's tasks to end")
    assert ray_processes(ray_tmp, daemons_only=True) == before
    assert ray_status_nodes(address, env) == 2


def test_easyr1_environment_is_checked_on_every_node_before_anything_starts(sshd, project, ray_tmp):
    """llf-recipes' own interpreter as EasyR1's (the trap): both nodes are asked, over ssh for node 1, and every
    problem is named at once; no Ray starts."""
    port = free_port()
    env = {**run_env(project, ray_tmp), "PYTHONPATH": str(ROOT)}  # no stand-in: the plain environment
    proc = run_cli_subprocess(*grpo_argv(project, "--launcher", "ssh", "--ssh-config", str(sshd["config"]),
                                         "--set", f"ray_port={port}"), cwd=project, env=env, timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    err = proc.stderr
    assert "EasyR1's environment" in err and "nothing was started" in err
    for rank, host in ((0, "127.0.0.1"), (1, "127.0.0.2")):
        assert f"node {rank} ({host}): {sys.executable}: No module named 'verl'" in err
        assert f"node {rank} ({host}): transformers 5." in err and "EasyR1 needs transformers<5" in err
    assert not ray_processes(ray_tmp) and not (project / "saves" / "grpo-gsm8k" / "grpo" / "llf-grpo.ray0.log").exists()

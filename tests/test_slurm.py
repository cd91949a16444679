"""--launcher slurm against a real SLURM: a controller and a node daemon from Debian's packages (slurmctld, slurmd,
munge) started by the test on this machine with ports picked at run time. A LLaMA-Factory stage trains the tiny model
to completion under srun; the manifest records the job id; Ctrl-C cancels the job and leaves nothing running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, assert_nothing_left, make_data_dir, processes_with, run_cli_subprocess
from loopback import free_port, wait_for

DAEMONS = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged")
CPU_QLORA_OFF = ["~quantization_bit", "~quantization_method", "~quantization_type", "~double_quantization"]


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _munge_works() -> bool:
    munge = subprocess.run(["munge", "-n"], capture_output=True, check=False)
    return munge.returncode == 0 and subprocess.run(["unmunge"], input=munge.stdout, capture_output=True,
                                                    check=False).returncode == 0


@pytest.fixture(scope="module")
def slurm():
    missing = [p for p in (*DAEMONS, shutil.which("sbatch") or "sbatch") if not Path(p).exists()]
    if missing:
        reason = ("needs SLURM and munge from Debian (apt-get install slurmctld slurmd slurm-client munge): missing "
                  + ", ".join(missing))
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    d = Path(tempfile.mkdtemp(prefix="llfslurm", dir="/tmp"))
    started_munge = None
    if not _munge_works():
        Path("/run/munge").mkdir(exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/mungekey"], check=True)
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
        started_munge = True
        wait_for(_munge_works, 20, "munged")
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool"):
        (d / sub).mkdir()
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=llftest
SlurmctldHost={host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
NodeName={host} CPUs={os.cpu_count() or 1} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run(["/usr/sbin/slurmctld", "-f", str(conf)], check=True, env=env)
    subprocess.run(["/usr/sbin/slurmd", "-f", str(conf)], check=True, env=env)
    try:
        def idle():
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env, check=False)
            return out.stdout.strip() == "idle"
        wait_for(idle, 60, "the SLURM node to be idle")
        yield {"conf": conf, "dir": d, "env": {"SLURM_CONF": str(conf)}}
    finally:
        for name in ("slurmd", "slurmctld"):
            pid = _pid(d / f"{name}.pid")
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
        if started_munge:
            pid = _pid(Path("/run/munge/munged.pid"))
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
        time.sleep(1)
        shutil.rmtree(d, ignore_errors=True)


def slurm_argv(tmp_path: Path, data: Path, model, steps: int) -> list[str]:
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost slots=1\n")
    sets = [f"model_name_or_path={model}", f"dataset_dir={data}", f"max_steps={steps}", "cutoff_len=128",
            "logging_steps=1", f"save_steps={steps}", "preprocessing_num_workers=1", "report_to=none", *CPU_QLORA_OFF]
    argv = ["run", "sft-huanhuan", "--hostfile", hosts, "--device", "cpu", "--launcher", "slurm",
            "--output-root", tmp_path / "saves"]
    for s in sets:
        argv += ["--set", s]
    return [str(a) for a in argv]


def job_gone_or_done(slurm, job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True, check=False,
                         env={**os.environ, **slurm["env"]}).stdout
    return not out.strip()


@pytest.mark.engine
def test_a_stage_trains_under_srun_and_the_manifest_names_the_job(slurm, tiny_model, catalog, tmp_path):
    data = make_data_dir(tmp_path / "data", catalog, ["huanhuan"])
    env = {**slurm["env"], "DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = run_cli_subprocess(*slurm_argv(tmp_path, data, tiny_model, 3), env=env, timeout=900)
    stage = tmp_path / "saves" / "sft-huanhuan" / "sft"
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    record = json.loads((stage / "llf-run.json").read_text())
    job_id = record["launch"]["job_id"]
    assert record["status"] == "completed" and record["launch"]["launcher"] == "slurm" and job_id.isdigit()
    assert f"submitted SLURM job {job_id}" in proc.stdout and "COMPLETED" in proc.stdout
    log = (stage / "llf-sft.node0.log").read_text()
    assert "Training completed" in log  # written by srun's task, on the node
    # followed while it ran: the progress from rank 0's trainer log, then each node's log; the engine's lines stay there
    assert "[1/1] sft: step 3/3" in proc.stderr
    assert f"SLURM job {job_id} COMPLETED; node 0 log {stage / 'llf-sft.node0.log'}" in proc.stdout
    assert "Running training" not in proc.stdout + proc.stderr and "Training completed" not in proc.stdout + proc.stderr
    script = (stage / "llf-sft.sbatch").read_text()
    assert "#SBATCH --nodes=1" in script and "srun " in script and 'NODE_RANK="$SLURM_NODEID"' in script
    state = json.loads((stage / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (stage / "adapter_model.safetensors").is_file()
    out = subprocess.run(["scontrol", "show", "job", job_id, "-o"], capture_output=True, text=True, check=False,
                         env={**os.environ, **slurm["env"]}).stdout
    assert "JobState=COMPLETED" in out


@pytest.mark.engine
def test_a_failing_job_ends_with_the_failing_nodes_last_lines(slurm, tiny_model, catalog, tmp_path):
    data = make_data_dir(tmp_path / "data", catalog, ["huanhuan"])
    env = {**slurm["env"], "DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"}
    # valid for every check before launch; PEFT finds no such module in the model once the job has loaded it
    argv = [*slurm_argv(tmp_path, data, tiny_model, 3), "--set", "lora_target=no_such_proj"]
    proc = run_cli_subprocess(*argv, env=env, timeout=900)
    stage = tmp_path / "saves" / "sft-huanhuan" / "sft"
    node_log = stage / "llf-sft.node0.log"
    assert proc.returncode != 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no_such_proj" in node_log.read_text()
    assert f"lines of {node_log} ---" in proc.stderr, proc.stderr[-3000:]
    tail = proc.stderr.split(f"lines of {node_log} ---", 1)[1]
    assert "no_such_proj" in tail  # the engine's own error, from the node's log
    assert "Running training" not in proc.stdout + proc.stderr
    assert json.loads((stage / "llf-run.json").read_text())["status"] == "failed"


@pytest.mark.engine
def test_ctrl_c_cancels_the_job_and_leaves_nothing(slurm, tiny_model, catalog, tmp_path):
    data = make_data_dir(tmp_path / "data", catalog, ["huanhuan"])
    out = tmp_path / "run.out"
    env = {**os.environ, **slurm["env"], "DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "llf_recipes", *slurm_argv(tmp_path, data, tiny_model, 5000)],
                                cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    stage = tmp_path / "saves" / "sft-huanhuan" / "sft"
    try:
        def training():
            log = stage / "llf-sft.node0.log"
            return log.exists() and "Running training" in log.read_text()
        wait_for(training, 420, "the job to start training")
        job_id = json.loads((stage / "llf-run.json").read_text())["launch"]["job_id"]
        assert processes_with(str(tmp_path))  # the trainer runs, started by slurmd
        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = out.read_text(errors="replace")
    assert code == 130, text[-3000:]
    assert f"cancelled SLURM job {job_id}" in text
    wait_for(lambda: job_gone_or_done(slurm, job_id), 60, "the job to leave the queue")
    state = subprocess.run(["scontrol", "show", "job", job_id, "-o"], capture_output=True, text=True, check=False,
                           env={**os.environ, **slurm["env"]}).stdout
    assert "JobState=CANCELLED" in state
    assert json.loads((stage / "llf-run.json").read_text())["status"] == "interrupted"
    assert_nothing_left(str(tmp_path))


def test_dry_run_prints_the_job_script(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("run", "sft-huanhuan", "--hostfile", "2node-8gpu", "--launcher", "slurm", "--dry-run",
                         "--nccl", "socket")
    assert code == 0, err
    assert "#SBATCH --nodes=2" in out and "#SBATCH --ntasks-per-node=1" in out and "#SBATCH --gpus-per-node=8" in out
    assert 'export MASTER_ADDR="${NODES[0]}"' in out and 'NODE_RANK="$SLURM_NODEID"' in out
    assert "NCCL_IB_DISABLE=1" in out and "NNODES=2" in out and "--output=" in out and ".node%n.log" in out
    assert not (tmp_path / "saves").exists()


def test_dry_run_of_an_easyr1_stage_starts_ray_inside_the_allocation_head_first(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("prepare", "gsm8k_grpo", "--sample", "--data-dir", "data")[0] == 0
    code, out, err = cli("run", "grpo-gsm8k", "--backend", "easyr1", "--hostfile", "2node-8gpu", "--launcher", "slurm",
                         "--dry-run", "--set", "easyr1_python=/opt/easyr1/bin/python")
    assert code == 0, err
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if "ray start --block --head --port=6379" in line)
    worker = next(i for i, line in enumerate(lines) if "ray start --block" in line and "--address=" in line)
    driver = next(i for i, line in enumerate(lines) if "verl.trainer.main" in line)
    assert head < worker < driver
    assert "/opt/easyr1/bin/ray start" in lines[head] and ".node0.log" in lines[head] and ".node$i.log" in lines[worker]
    assert 'RAY_ADDRESS="$RAY_ADDRESS_HEAD" /opt/easyr1/bin/python -m verl.trainer.main' in lines[driver]
    script = tmp_path / "job.sh"
    script.write_text(out.split("\n", 1)[1])
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr  # the script parses

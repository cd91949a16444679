"""--launcher slurm: one sbatch job per stage, one task per node.

The job script (written to `<output_dir>/llf-<stage>.sbatch`, printed by `run --dry-run --launcher slurm`) takes
`MASTER_ADDR` from the allocation's first host, starts every node's command with `srun` (the node rank from
`SLURM_NODEID`, a log per node), and for a stage that needs Ray starts Ray inside the allocation first: the head on
the first node, then the others, the driver on the head once every node has registered. `run` submits it with
`sbatch`, follows it (state and every node's new log lines) until it ends, records the job id in the stage's manifest,
and on Ctrl-C cancels it with `scancel`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from llf_recipes.errors import LlfError
from llf_recipes.launchers.command import LaunchPlan
from llf_recipes.launchers.jobs import Terminated
from llf_recipes.launchers.local import resolve_program

POLL_S = 1.0
DONE_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL",
               "DEADLINE"}
RAY_READY_S = 180


def _paths(plan: LaunchPlan, log_dir: Path) -> tuple[Path, Path, str]:
    log_dir = log_dir.resolve()
    return log_dir / f"llf-{plan.stage}.sbatch", log_dir / f"llf-{plan.stage}.slurm.out", \
        str(log_dir / f"llf-{plan.stage}.node%n.log")


def node_log(log_dir: Path, stage: str, rank: int) -> Path:
    return log_dir.resolve() / f"llf-{stage}.node{rank}.log"


def _env_words(env: dict[str, str], drop: tuple[str, ...] = ()) -> list[str]:
    return [f"{k}={v}" for k, v in env.items() if k not in drop]


def sbatch_script(plan: LaunchPlan, log_dir: Path) -> str:
    """The job script for `plan` (its layout's node count, one task per node)."""
    cluster = getattr(plan, "ray", None)
    layout = plan.rendered.layout
    nnodes = len(cluster.hosts) if cluster is not None else len(plan.commands)
    _, out_path, node_logs = _paths(plan, log_dir)
    name = f"llf-{plan.rendered.recipe.name}-{plan.stage}"
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={nnodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --output={out_path}",
        f"#SBATCH --chdir={os.getcwd()}",
        *([f"#SBATCH --gpus-per-node={layout.per_node}"] if layout.device == "cuda" else []),
        "# written by llf-recipes run --launcher slurm: one task per node, each node's output in its own log",
        "set -uo pipefail",
        'mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        'export MASTER_ADDR="${NODES[0]}"',
    ]
    if cluster is None:
        cmd = plan.commands[0]
        argv = [resolve_program(cmd.argv[0]), *cmd.argv[1:]]
        env = _env_words(cmd.env, drop=("MASTER_ADDR", "NODE_RANK"))
        # each task: NODE_RANK from SLURM_NODEID, then exec the node's command with the stage's variables
        per_node = ["bash", "-c", 'export NODE_RANK="$SLURM_NODEID"; exec "$@"', "llf-node", "env", *env, *argv]
        lines += [
            (f"srun --nodes={nnodes} --ntasks={nnodes} --ntasks-per-node=1 --kill-on-bad-exit=1 "
             f"--output={shlex.quote(node_logs)} {shlex.join(per_node)}"),
        ]
        return "\n".join(lines) + "\n"
    return "\n".join(lines + _ray_lines(plan, cluster, nnodes, node_logs)) + "\n"


def _ray_lines(plan: LaunchPlan, cluster, nnodes: int, node_logs: str) -> list[str]:
    """Ray inside the allocation: head on the first node, the others after it, the driver in the batch step (which
    runs on the first node) once every node has registered; the Ray steps are cancelled when the driver ends."""
    from llf_recipes.launchers.ray import CLUSTER_PROBE

    port = cluster.port
    env = _env_words(cluster.device_env)
    head = [cluster.ray, "start", "--block", "--head", f"--port={port}"]
    worker = [cluster.ray, "start", "--block"]
    gpus = [f"--num-gpus={cluster.accelerators_per_node}"] if cluster.accelerator == "GPU" else []
    wait = (f"import json,subprocess,sys,time\n"
            f"probe={CLUSTER_PROBE!r}\n"
            f"end=time.time()+{RAY_READY_S}\n"
            "while time.time()<end:\n"
            "    out=subprocess.run([sys.executable,'-c',probe,sys.argv[1]],capture_output=True,text=True).stdout\n"
            "    try: info=json.loads(out.strip().splitlines()[-1])\n"
            "    except Exception: info={}\n"
            "    if len([n for n in info.get('nodes',[]) if n.get('alive')])>=int(sys.argv[2]): sys.exit(0)\n"
            "    time.sleep(3)\n"
            "print('Ray: fewer than %s nodes registered within %s s' % (sys.argv[2], " + str(RAY_READY_S) + "))\n"
            "sys.exit(1)\n")
    cmd = plan.commands[0]
    driver_env = ["env", *_env_words(cmd.env)]
    head_log = node_logs.replace("%n", "0")
    worker_log = shlex.quote(node_logs.split(".node%n.")[0] + ".node") + "$i" + shlex.quote("." + node_logs.split(".node%n.")[1])
    return [
        f'RAY_ADDRESS_HEAD="${{MASTER_ADDR}}:{port}"',
        (f"srun --overlap --nodes=1 --ntasks=1 -w \"${{NODES[0]}}\" --output={shlex.quote(head_log)} "
         f"env {shlex.join(env)} {shlex.join(head + gpus)} &"),
        "RAY_STEPS=($!)",
        "sleep 5",
        'for ((i = 1; i < ${#NODES[@]}; i++)); do',
        (f"  srun --overlap --nodes=1 --ntasks=1 -w \"${{NODES[$i]}}\" --output={worker_log} "
         f"env {shlex.join(env)} {shlex.join(worker + gpus)} --address=\"$RAY_ADDRESS_HEAD\" &"),
        "  RAY_STEPS+=($!)",
        "done",
        "trap 'kill \"${RAY_STEPS[@]}\" 2>/dev/null; wait' EXIT",
        f"{shlex.quote(cluster.python)} -c {shlex.quote(wait)} \"$RAY_ADDRESS_HEAD\" {nnodes} || exit 1",
        f"{shlex.join(driver_env)} RAY_ADDRESS=\"$RAY_ADDRESS_HEAD\" {shlex.join(list(cmd.argv))}",
    ]


# ---------------------------------------------------------------- submit and follow


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise LlfError(f"--launcher slurm needs `{name}`, which is not on PATH",
                       fix="run from a SLURM login node (slurm-client installed, SLURM_CONF pointing at the cluster)")
    return found


def job_state(job_id: str) -> tuple[str, str]:
    """(state, exit code "N:S") from `scontrol show job`; ("", "") when SLURM no longer knows the job."""
    proc = subprocess.run([_tool("scontrol"), "show", "job", job_id, "-o"], capture_output=True, text=True,
                          check=False, timeout=60)
    state = re.search(r"\bJobState=(\S+)", proc.stdout)
    code = re.search(r"\bExitCode=(\S+)", proc.stdout)
    return (state.group(1) if state else ""), (code.group(1) if code else "")


class _Tail:
    """New lines of every node's log, shown as a local run shows its engine's (warnings and errors once, with the
    node's prefix; everything with --verbose)."""

    def __init__(self, paths: list[tuple[str, Path]]):
        from llf_recipes.console import EngineEcho

        self.paths = paths
        self.offsets = {p: 0 for _, p in paths}
        self.partial = {p: b"" for _, p in paths}
        self.echo = {p: EngineEcho(prefix=label) for label, p in paths}

    def pump(self) -> None:
        for label, path in self.paths:
            try:
                with open(path, "rb") as fh:
                    fh.seek(self.offsets[path])
                    data = fh.read()
            except OSError:
                continue
            if not data:
                continue
            self.offsets[path] += len(data)
            *lines, self.partial[path] = (self.partial[path] + data).split(b"\n")
            for line in lines:
                self.echo[path](line + b"\n")


def cancel(job_id: str, timeout: float = 60) -> str:
    """scancel the job and wait until SLURM says it ended; its last state."""
    subprocess.run([_tool("scancel"), job_id], check=False, capture_output=True, timeout=60)
    deadline = time.time() + timeout
    state = ""
    while time.time() < deadline:
        state, _ = job_state(job_id)
        if not state or state in DONE_STATES:
            break
        time.sleep(POLL_S)
    return state


def execute(plan: LaunchPlan, log_dir: Path, options) -> int:
    """Write the job script, submit it, follow it to its end; the job's exit code (130 after Ctrl-C)."""
    from llf_recipes import manifest
    from llf_recipes.atomic import write_text

    script_path, out_path, _ = _paths(plan, log_dir)
    text = sbatch_script(plan, log_dir)
    write_text(script_path, text)
    script_path.chmod(0o755)
    argv = [_tool("sbatch"), "--parsable", *options.sbatch_args, str(script_path)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise LlfError(f"sbatch refused the job: {(proc.stderr or proc.stdout).strip()}", where=str(script_path),
                       fix="check the --sbatch options (partition, account, time) against `sinfo`")
    job_id = proc.stdout.strip().split(";")[0]
    manifest.update(log_dir, launch={"launcher": "slurm", "job_id": job_id, "script": str(script_path)})
    nnodes = len(plan.ray.hosts) if getattr(plan, "ray", None) is not None else len(plan.commands)
    tail = _Tail([(f"[node {r}] ", node_log(log_dir, plan.stage, r)) for r in range(nnodes)] + [("[job] ", out_path)])
    print(f"stage {plan.stage}: submitted SLURM job {job_id} ({nnodes} node(s)); script {script_path}", flush=True)
    last = ""
    old_term = None
    if threading.current_thread() is threading.main_thread():
        def on_term(*_):
            raise Terminated
        old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        while True:
            state, code = job_state(job_id)
            tail.pump()
            if state != last and state:
                print(f"stage {plan.stage}: SLURM job {job_id} {state}", flush=True)
                last = state
            if not state or state in DONE_STATES:
                break
            time.sleep(POLL_S)
    except (KeyboardInterrupt, Terminated) as exc:
        final = cancel(job_id)
        tail.pump()
        print(f"stage {plan.stage}: cancelled SLURM job {job_id} ({final or 'gone'})", file=sys.stderr, flush=True)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    tail.pump()
    exit_code = int(code.split(":")[0]) if code and code.split(":")[0].isdigit() else (0 if state == "COMPLETED" else 1)
    _closing(plan.stage, job_id, state, out_path, [node_log(log_dir, plan.stage, r) for r in range(nnodes)])
    if state != "COMPLETED" or exit_code:
        print(f"error: stage {plan.stage}: SLURM job {job_id} ended {state or 'unknown'} (exit {code or '?'}); logs: "
              f"{out_path}, {node_log(log_dir, plan.stage, 0).parent}/llf-{plan.stage}.node*.log", file=sys.stderr,
              flush=True)
        return exit_code or 1
    return 0


def failed_tasks(out_path: Path) -> list[int]:
    """The node ranks srun reported as failed in the job's output (`srun: error: HOST: task N: Exited with ...`)."""
    try:
        text = out_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return sorted({int(m) for m in re.findall(r"srun: error: \S+: tasks? (\d+)(?:-\d+)?: (?:Exited|Killed|Terminated)", text)})


def _closing(stage: str, job_id: str, state: str, out_path: Path, logs: list[Path]) -> None:
    """One line per node's log; when the job failed, the last lines of the failing node's log (else the job's)."""
    from llf_recipes.console import print_tail

    ok = state == "COMPLETED"
    print(f"stage {stage}: SLURM job {job_id} {state or 'gone'}; " + "; ".join(f"node {r} log {p}" for r, p in enumerate(logs)),
          file=sys.stdout if ok else sys.stderr, flush=True)
    if ok:
        return
    ranks = [r for r in failed_tasks(out_path) if r < len(logs)]
    if ranks:
        print_tail(logs[ranks[0]], f"node {ranks[0]}")
    else:
        print_tail(out_path, f"SLURM job {job_id}")

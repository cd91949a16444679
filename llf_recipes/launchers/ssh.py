"""--launcher ssh: every node's command started locally (a local host) or over ssh, each under the watchdog; a
preflight asks every node, in parallel, whether it can take part before anything starts."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from llf_recipes.errors import LlfError
from llf_recipes.hardware import LOCAL_HOSTS
from llf_recipes.launchers.command import LaunchPlan
from llf_recipes.launchers.jobs import NodeJob, run_jobs
from llf_recipes.launchers.local import resolve_program
from llf_recipes.launchers.watchdog import watchdog_argv

SSH_CONNECT_TIMEOUT_S = 5
SSH_OPTIONS = ("-T", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=4")

# Local variables a remote node gets too (ssh passes no environment). Secrets (names with TOKEN, KEY, SECRET or
# PASSWORD) are left out: they would show on the remote command line; set them on each node instead.
FORWARD_PREFIXES = ("NCCL_", "GLOO_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH_", "PYTORCH_", "OMP_", "MKL_",
                    "WANDB_", "MODELSCOPE_", "ACCELERATE_", "DS_", "TRITON_", "CUDA_", "ASCEND_", "HCCL_", "RAY_")
FORWARD_NAMES = ("DISABLE_VERSION_CHECK", "ALLOW_EXTRA_ARGS", "USE_MODELSCOPE_HUB", "TOKENIZERS_PARALLELISM",
                 "LLAMAFACTORY_VERBOSITY", "OPTIM_TORCH", "MAX_RESTARTS", "PYTHONPATH", "LD_LIBRARY_PATH")
_SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD")

# Run on each node (or locally for a local node) before anything starts: what this node can offer the run.
PROBE = r"""
import json, os, shutil, socket, subprocess, sys
a = json.loads(sys.argv[1])
r = {"cwd": os.path.isdir(a["cwd"]), "program": os.access(a["program"], os.X_OK), "missing": [], "devices": None}
if r["cwd"]:
    os.chdir(a["cwd"])
    r["missing"] = [f for f in a["files"] if not os.path.exists(f)]
if a.get("port"):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("", a["port"]))
        r["port_error"] = None
    except OSError as e:
        r["port_error"] = e.strerror or str(e)
    finally:
        s.close()
try:
    if a["device"] == "cuda" and shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
        r["devices"] = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    elif a["device"] == "npu" and shutil.which("npu-smi"):
        out = subprocess.run(["npu-smi", "info", "-l"], capture_output=True, text=True, timeout=30).stdout
        counts = [line.split(":")[1] for line in out.splitlines() if "Total Count" in line]
        r["devices"] = int(counts[0]) if counts else None
except (OSError, ValueError, subprocess.SubprocessError):
    pass
print(json.dumps(r))
"""


def is_local_host(host: str) -> bool:
    """localhost, a loopback address written as such, or this machine's own name: started without ssh."""
    if host in LOCAL_HOSTS:
        return True
    name = socket.gethostname()
    return host in (name, name.split(".")[0], socket.getfqdn())


def ssh_argv(host: str, remote_command: str, ssh_config: str | None, connect_timeout: int | None = None) -> list[str]:
    argv = ["ssh", *SSH_OPTIONS, "-o", "LogLevel=ERROR"]
    if connect_timeout:
        argv += ["-o", f"ConnectTimeout={connect_timeout}"]
    if ssh_config:
        argv += ["-F", ssh_config]
    return [*argv, "--", host, remote_command]


# `scheme://user:password@` (or a token as the user part) inside a value
_URL_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]+@")


def forwarded_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {
        k: v for k, v in sorted(environ.items())
        if (k in FORWARD_NAMES or k.startswith(FORWARD_PREFIXES)) and not any(w in k for w in _SECRET_WORDS)
        and not _URL_CREDENTIALS.search(v)  # HF_ENDPOINT=https://user:pass@host would show on the ssh command line
    }


def shell_line(argv: list[str], env: dict[str, str], cwd: str) -> str:
    """`cd CWD && K=V ... PROGRAM ARGS`: one POSIX shell line, every part quoted."""
    assigns = [f"{k}={shlex.quote(v)}" for k, v in env.items()]
    return " ".join([f"cd {shlex.quote(cwd)}", "&&", *assigns, shlex.join(argv)])


def _remote_command(argv: list[str], env: dict[str, str], cwd: str) -> str:
    """What ssh runs: cd, then exec the watchdog with the environment passed explicitly via env(1)."""
    assigns = [f"{k}={v}" for k, v in env.items()]
    inner = ["env", *assigns, *watchdog_argv(argv)]
    return f"cd {shlex.quote(cwd)} && exec {shlex.join(inner)}"


def ssh_config_path(ssh_config: str | None) -> str | None:
    if not ssh_config:
        return None
    p = Path(ssh_config).expanduser()
    if not p.is_file():
        raise LlfError(f"--ssh-config {ssh_config}: no such file", fix="give the path of an ssh client config file")
    return str(p.resolve())


# ---------------------------------------------------------------- preflight


@dataclass
class Problem:
    node_rank: int
    host: str
    message: str
    fix: str

    def format(self) -> str:
        return f"- node {self.node_rank} ({self.host}): {self.message}\n    fix: {self.fix}"


def _probe(host: str, args: dict, ssh_config: str | None) -> tuple[dict | None, str]:
    """Run PROBE on `host` (locally for a local host); (result, error text)."""
    local = [sys.executable, "-c", PROBE, json.dumps(args)]
    if is_local_host(host):
        argv = local
    else:
        argv = ssh_argv(host, shlex.join(local), ssh_config, connect_timeout=SSH_CONNECT_TIMEOUT_S)
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=SSH_CONNECT_TIMEOUT_S + 60)
    except subprocess.TimeoutExpired:
        return None, "no answer within a minute"
    except FileNotFoundError as exc:
        return None, f"cannot start {exc.filename}"
    err = proc.stderr.strip().splitlines()
    if proc.returncode == 255 and not is_local_host(host):
        return None, f"ssh: {err[-1] if err else 'connection failed'}"
    if proc.returncode != 0:
        return None, f"exit code {proc.returncode}: {err[-1] if err else ''}".rstrip(": ")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), ""
    except (ValueError, IndexError):
        return None, f"unexpected answer {proc.stdout[-200:]!r}"


def _ssh_fix(host: str, ssh_config: str | None) -> str:
    cfg = f" -F {shlex.quote(ssh_config)}" if ssh_config else ""
    return (f"make `ssh -o BatchMode=yes{cfg} -- {shlex.quote(host)} true` work without a password prompt (key in the node's "
            "authorized_keys, host key in known_hosts), or start the commands yourself with --launcher print")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def probe_hosts(layout, ssh_config: str | None, files: tuple[str, ...] = (), port: int = 0,
                program: str | None = None) -> list[tuple[dict | None, Problem | None]]:
    """Ask every node of `layout` (in parallel) what it offers: reachable, same working directory and program,
    which of `files` it cannot see, its device count, and on node 0 whether `port` is free. Per node, the answer
    (with "local" added) and the first problem that stops further checks (unreachable, no working directory)."""
    program = program or resolve_program("llamafactory-cli")
    cwd = os.getcwd()
    answers: dict[int, tuple[dict | None, str]] = {}

    def one(rank: int, host: str) -> None:
        args = {"cwd": cwd, "program": program, "files": list(files), "device": layout.device,
                "port": port if rank == 0 else 0}
        answers[rank] = _probe(host, args, ssh_config)

    threads = [threading.Thread(target=one, args=(i, n.host)) for i, n in enumerate(layout.nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out: list[tuple[dict | None, Problem | None]] = []
    for rank, node in enumerate(layout.nodes):
        r, err = answers[rank]
        host = node.host
        if r is None:
            if err.startswith("ssh:"):
                problem = Problem(rank, host, f"not reachable over ssh ({err[5:]})", _ssh_fix(host, ssh_config))
            elif "exit code 127" in err or "No such file" in err:
                problem = Problem(rank, host, f"cannot run {sys.executable} there ({err})",
                                  "install the same Python environment at the same path on every node")
            else:
                problem = Problem(rank, host, f"the check failed ({err})", _ssh_fix(host, ssh_config))
            out.append((None, problem))
            continue
        r["local"] = is_local_host(host)
        if not r["cwd"]:
            out.append((r, Problem(rank, host, f"working directory {cwd} does not exist there",
                                   "run from a directory that exists at the same path on every node "
                                   "(a shared filesystem)")))
        elif not r["program"]:
            out.append((r, Problem(rank, host, f"{program} is missing there",
                                   "install the same environment (llamafactory) at the same path on every node")))
        else:
            out.append((r, None))
    return out


def check_hosts(plan: LaunchPlan, ssh_config: str | None) -> list[Problem]:
    """Every node: reachable, same working directory and program, the stage's files visible, devices vs slots;
    on the master also MASTER_PORT free."""
    layout = plan.rendered.layout
    files = tuple(str(f) for f in plan.files)
    port = int(plan.commands[0].env.get("MASTER_PORT") or 0)
    hosts = [layout.nodes[c.node_rank] for c in plan.commands]
    sub = replace(layout, nodes=tuple(hosts))
    problems: list[Problem] = []
    for cmd, (r, problem) in zip(plan.commands, probe_hosts(sub, ssh_config, files, port,
                                                            resolve_program(plan.commands[0].argv[0]))):
        rank, host = cmd.node_rank, cmd.host
        if problem is not None:
            problems.append(problem)
            continue
        assert r is not None
        if r["missing"]:
            problems.append(Problem(rank, host, f"cannot see {', '.join(r['missing'])} (written on this machine)",
                                    "put --output-root (and the data and model paths) on a filesystem every node shares"))
        if rank == 0 and r.get("port_error"):
            problems.append(Problem(rank, host, f"MASTER_PORT {port} is in use ({r['port_error']})",
                                    f"pick a free port with --master-port (e.g. --master-port {free_port()})"))
        if r.get("devices") is not None:
            problems += _device_problems(cmd, layout, r["devices"])
    return problems


def _device_problems(cmd, layout, count: int) -> list[Problem]:
    unit = "NPU" if layout.device == "npu" else "GPU"
    ids = [int(i) for i in layout.visible_devices().split(",") if i]
    if count >= layout.per_node and (not ids or max(ids) < count):
        return []
    node = layout.nodes[cmd.node_rank]
    where = f"{layout.source}:{node.line}" if node.line else layout.source
    return [Problem(cmd.node_rank, cmd.host,
                    f"slots={layout.per_node} ({where}) but {count} {unit}{'s' if count != 1 else ''} visible there",
                    f"set slots={count} for {cmd.host} in the hostfile (every host the same)")]


def preflight(plan: LaunchPlan, ssh_config: str | None = None) -> None:
    """Raise one LlfError naming every node that cannot take part, before any process starts."""
    problems = check_hosts(plan, ssh_config_path(ssh_config))
    if problems:
        raise LlfError(f"stage {plan.stage}: preflight found {len(problems)} problem(s); nothing was started\n"
                       + "\n".join(p.format() for p in problems))




# ---------------------------------------------------------------- execution


def node_job(rank: int, host: str, argv: list[str], env: dict[str, str], log: Path, ssh_config: str | None,
             label: str | None = None, service: bool = False) -> NodeJob:
    """One node's command under the watchdog: a local process for a local host (this environment plus `env`), else
    an ssh client whose remote command gets the forwarded variables plus `env`, in this working directory."""
    label = label if label is not None else f"[node {rank}] "
    if is_local_host(host):
        return NodeJob(rank, host, label, watchdog_argv(argv), {**os.environ, **env}, log, service)
    remote = _remote_command(argv, {**forwarded_env(), **env}, os.getcwd())
    return NodeJob(rank, host, label, ssh_argv(host, remote, ssh_config), None, log, service)


def node_jobs(plan: LaunchPlan, log_dir: Path, ssh_config: str | None) -> list[NodeJob]:
    return [node_job(c.node_rank, c.host, [resolve_program(c.argv[0]), *c.argv[1:]], dict(c.env),
                     log_dir / f"llf-{plan.stage}.node{c.node_rank}.log", ssh_config) for c in plan.commands]


def execute(plan: LaunchPlan, log_dir: Path, ssh_config: str | None) -> int:
    """`--launcher ssh`: preflight every node, then start them all; the worst rank's exit code."""
    cfg = ssh_config_path(ssh_config)
    preflight(plan, cfg)
    jobs = node_jobs(plan, log_dir, cfg)
    hosts = ", ".join(f"node {j.node_rank} {j.host} -> {j.log_path}" for j in jobs)
    print(f"stage {plan.stage}: starting {len(jobs)} node(s): {hosts}", flush=True)
    code, message = run_jobs(jobs, log_dir / f"llf-{plan.stage}.log", plan.stage)
    if code:
        print(f"error: stage {plan.stage}: {message}", file=sys.stderr, flush=True)
    return code

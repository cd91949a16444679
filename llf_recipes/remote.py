"""Multi-node execution: every node's command started locally or over ssh, logs streamed per node, all-or-nothing stop.

Each node's command runs under a small watchdog (WATCHDOG, plain Python so a remote node needs nothing but the same
interpreter): it starts the command in its own session, and when its standard input closes (the ssh client or
`llf-recipes run` died, or the run is being stopped) or it gets SIGTERM/SIGINT/SIGHUP, it stops the command's whole
process tree, torchrun's workers included (they live in sessions of their own, so a process group is not enough).
ssh gives a remote command no SIGHUP without a tty, so the closed stdin is what carries "stop" to every node.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from llf_recipes.errors import LlfError
from llf_recipes.hardware import LOCAL_HOSTS
from llf_recipes.launch import StagePlan, resolve_program

STOP_GRACE_S = 10  # SIGTERM -> SIGKILL, for the watchdog and for the processes it stops
SSH_CONNECT_TIMEOUT_S = 5
SSH_OPTIONS = ("-T", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=4")

# Local variables a remote node gets too (ssh passes no environment). Secrets (names with TOKEN, KEY, SECRET or
# PASSWORD) are left out: they would show on the remote command line; set them on each node instead.
FORWARD_PREFIXES = ("NCCL_", "GLOO_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH_", "PYTORCH_", "OMP_", "MKL_",
                    "WANDB_", "MODELSCOPE_", "ACCELERATE_", "DS_", "TRITON_", "CUDA_", "ASCEND_", "HCCL_")
FORWARD_NAMES = ("DISABLE_VERSION_CHECK", "ALLOW_EXTRA_ARGS", "USE_MODELSCOPE_HUB", "TOKENIZERS_PARALLELISM",
                 "LLAMAFACTORY_VERBOSITY", "OPTIM_TORCH", "MAX_RESTARTS", "PYTHONPATH", "LD_LIBRARY_PATH")
_SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD")
# What `ray[default]` adds for the dashboard (ray/dashboard/optional_deps.py), which LLaMA-Factory's Ray path needs.
_RAY_DASHBOARD_DEPS = ("aiohttp", "aiohttp_cors", "opencensus", "prometheus_client")

WATCHDOG = r"""
import os, signal, subprocess, sys, threading, time
grace = float(sys.argv[1])
argv = sys.argv[2:]
os.environ["PATH"] = os.path.dirname(argv[0]) + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("PYTHONUNBUFFERED", "1")
try:  # orphaned descendants are re-parented to us, so the tree walk still finds them
    import ctypes
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except Exception:
    pass
stop = threading.Event()
def on_signal(*_):
    stop.set()
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, on_signal)
def watch_stdin():
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    stop.set()
child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
threading.Thread(target=watch_stdin, daemon=True).start()
def descendants():
    if not os.path.isdir("/proc"):
        return [child.pid] if child.poll() is None else []
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    kids.setdefault(int(fields[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [os.getpid()]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out
def reap():
    # zombies re-parented to us; never waitpid(-1), which could take the child's exit status from Popen
    for d in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if d.isdigit() and int(d) != child.pid:
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if fields[0] == "Z" and int(fields[1]) == os.getpid():
                    os.waitpid(int(d), os.WNOHANG)
            except (OSError, IndexError, ValueError):
                pass
def end_tree(wait):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = descendants()
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        deadline = time.time() + wait
        while time.time() < deadline and descendants():
            reap()
            time.sleep(0.1)
        reap()
while child.poll() is None and not stop.is_set():
    stop.wait(0.2)
code = child.poll()
end_tree(grace if code is None else 2)
code = child.wait()
sys.exit(128 - code if code < 0 else code)
"""

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


def forwarded_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {
        k: v for k, v in sorted(environ.items())
        if (k in FORWARD_NAMES or k.startswith(FORWARD_PREFIXES)) and not any(w in k for w in _SECRET_WORDS)
    }


def shell_line(argv: list[str], env: dict[str, str], cwd: str) -> str:
    """`cd CWD && K=V ... PROGRAM ARGS`: one POSIX shell line, every part quoted."""
    assigns = [f"{k}={shlex.quote(v)}" for k, v in env.items()]
    return " ".join([f"cd {shlex.quote(cwd)}", "&&", *assigns, shlex.join(argv)])


def _remote_command(argv: list[str], env: dict[str, str], cwd: str) -> str:
    """What ssh runs: cd, then exec the watchdog with the environment passed explicitly via env(1)."""
    assigns = [f"{k}={v}" for k, v in env.items()]
    inner = ["env", *assigns, sys.executable, "-c", WATCHDOG, str(STOP_GRACE_S), *argv]
    return f"cd {shlex.quote(cwd)} && exec {shlex.join(inner)}"


def _ssh_config_path(ssh_config: str | None) -> str | None:
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
    return (f"make `ssh -o BatchMode=yes{cfg} {host} true` work without a password prompt (key in the node's "
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


def check_hosts(plan: StagePlan, ssh_config: str | None) -> list[Problem]:
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


def preflight(plan: StagePlan, ssh_config: str | None = None) -> None:
    """Raise one LlfError naming every node that cannot take part, before any process starts."""
    problems = check_hosts(plan, _ssh_config_path(ssh_config))
    if problems:
        raise LlfError(f"stage {plan.stage}: preflight found {len(problems)} problem(s); nothing was started\n"
                       + "\n".join(p.format() for p in problems))


# ---------------------------------------------------------------- execution


@dataclass
class NodeJob:
    node_rank: int
    host: str
    label: str  # terminal prefix
    argv: list[str]
    env: dict[str, str] | None  # full environment for a local process; None = inherit (ssh)
    log_path: Path
    proc: subprocess.Popen | None = None
    code: int | None = None
    stopped: bool = False  # ended by us, not by itself
    reader: threading.Thread | None = field(default=None, repr=False)


def _node_jobs(plan: StagePlan, log_dir: Path, ssh_config: str | None) -> list[NodeJob]:
    cwd = os.getcwd()
    forward = forwarded_env()
    jobs = []
    for cmd in plan.commands:
        argv = [resolve_program(cmd.argv[0]), *cmd.argv[1:]]
        log = log_dir / f"llf-{plan.stage}.node{cmd.node_rank}.log"
        if is_local_host(cmd.host):
            local = [sys.executable, "-c", WATCHDOG, str(STOP_GRACE_S), *argv]
            jobs.append(NodeJob(cmd.node_rank, cmd.host, f"[node {cmd.node_rank}] ", local,
                                {**os.environ, **cmd.env}, log))
        else:
            remote = _remote_command(argv, {**forward, **cmd.env}, cwd)
            jobs.append(NodeJob(cmd.node_rank, cmd.host, f"[node {cmd.node_rank}] ",
                                ssh_argv(cmd.host, remote, ssh_config), None, log))
    return jobs


class _Terminated(Exception):
    pass


def run_jobs(jobs: list[NodeJob], combined_log: Path) -> tuple[int, str]:
    """Start every job, stream its output, stop them all when one fails or on Ctrl-C/SIGTERM.

    Returns (exit code, message): 0 and "" when every job succeeded.
    """
    combined_log.parent.mkdir(parents=True, exist_ok=True)
    with open(combined_log, "ab") as combined:
        return _run_jobs(jobs, combined, combined_log)


def _run_jobs(jobs: list[NodeJob], combined, combined_log: Path) -> tuple[int, str]:
    out_lock = threading.Lock()

    def pump(job: NodeJob) -> None:
        prefix = job.label.encode()
        with open(job.log_path, "ab") as log:
            assert job.proc is not None and job.proc.stdout is not None
            for line in job.proc.stdout:
                log.write(line)
                log.flush()
                with out_lock:
                    sys.stdout.buffer.write(prefix + line)
                    sys.stdout.buffer.flush()
                    combined.write(prefix + line)
                    combined.flush()

    old_term = None
    if threading.current_thread() is threading.main_thread():
        def on_term(*_):
            raise _Terminated
        old_term = signal.signal(signal.SIGTERM, on_term)
    interrupted = 0
    try:
        try:
            for job in jobs:
                job.log_path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    job.proc = subprocess.Popen(job.argv, env=job.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, start_new_session=True)
                except OSError as exc:
                    _stop_all(jobs)
                    raise LlfError(f"node {job.node_rank} ({job.host}): cannot start {job.argv[0]}: {exc.strerror}",
                                   fix="install the OpenSSH client (ssh) for --launcher ssh") from exc
                job.reader = threading.Thread(target=pump, args=(job,), daemon=True)
                job.reader.start()
            failed = _wait_for_failure(jobs)
        except KeyboardInterrupt:
            interrupted, failed = 130, []
        except _Terminated:
            interrupted, failed = 143, []
        _stop_all(jobs)
        for job in jobs:
            if job.reader is not None:
                job.reader.join(timeout=10)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return _outcome(jobs, failed, interrupted, combined_log)


def _collect(jobs: list[NodeJob], failed: list[NodeJob]) -> None:
    for job in jobs:
        if job.code is None and job.proc is not None and job.proc.poll() is not None:
            job.code = job.proc.returncode
            if job.code != 0:
                failed.append(job)


def _wait_for_failure(jobs: list[NodeJob]) -> list[NodeJob]:
    """Block until every job ended well (returns []) or one failed (returns the failed ones, first first)."""
    failed: list[NodeJob] = []
    while not failed and any(j.code is None for j in jobs):
        _collect(jobs, failed)
        time.sleep(0.2)
    if failed:
        # nodes failing within a moment of each other failed by themselves: name them all, not as "stopped"
        deadline = time.time() + 1.0
        while time.time() < deadline and any(j.code is None for j in jobs):
            time.sleep(0.1)
            _collect(jobs, failed)
    return failed


def _stop_all(jobs: list[NodeJob]) -> None:
    """Close every running job's stdin (its watchdog then stops the node's tree), then SIGTERM, then SIGKILL."""
    running = [j for j in jobs if j.proc is not None and j.proc.poll() is None]
    for job in running:
        job.stopped = True
        try:
            job.proc.stdin.close()
        except OSError:
            pass
    for sig, wait in ((None, STOP_GRACE_S + 5), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        running = [j for j in running if j.proc.poll() is None]
        if not running:
            break
        for job in running:
            if sig is not None:
                try:
                    os.killpg(job.proc.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.time() + wait
        while time.time() < deadline and any(j.proc.poll() is None for j in running):
            time.sleep(0.1)
    for job in jobs:
        if job.proc is not None:
            if job.code is None:
                job.code = job.proc.wait()
            if job.proc.stdin and not job.proc.stdin.closed:
                try:
                    job.proc.stdin.close()
                except OSError:
                    pass


def _outcome(jobs: list[NodeJob], failed: list[NodeJob], interrupted: int, combined_log: Path) -> tuple[int, str]:
    if interrupted:
        return interrupted, (f"interrupted: stopped {len(jobs)} node(s); logs: "
                             + ", ".join(str(j.log_path) for j in jobs))
    if not failed:
        return 0, ""
    # a node that ended by itself with an error while we were stopping the rest failed too
    failed += [j for j in jobs if j not in failed and not j.stopped and j.code not in (0, None)]
    lines = []
    for job in failed:
        why = "could not be reached or lost its ssh connection" if job.code == 255 and job.env is None else "failed"
        lines.append(f"node {job.node_rank} ({job.host}) {why} with exit code {job.code}; log: {job.log_path}")
    stopped = [j for j in jobs if j.stopped]
    if stopped:
        lines.append("stopped: " + ", ".join(f"node {j.node_rank} ({j.host})" for j in stopped))
    lines.append(f"all nodes: {combined_log}")
    return failed[0].code or 1, "\n  ".join(lines)


def print_commands(plan: StagePlan) -> None:
    """`--launcher print`: one shell line per node, to run by hand or from a SLURM script."""
    cwd = os.getcwd()
    layout = plan.rendered.layout
    print(f"# stage {plan.stage}: run each line on its node ({layout.describe()}); node 0 first is not required")
    for cmd in plan.commands:
        argv = [resolve_program(cmd.argv[0]), *cmd.argv[1:]]
        print(f"# node {cmd.node_rank}: {cmd.host}")
        print(shell_line(argv, cmd.env, cwd))


def ray_driver(plan: StagePlan) -> tuple[list[str], dict[str, str]]:
    """`--launcher ray`: LLaMA-Factory's Ray path runs one driver here (USE_RAY=1) and places ray_num_workers
    workers over the Ray cluster itself, so no torchrun variables. Returns the argv and the variables it sets."""
    if importlib.util.find_spec("ray") is None:
        raise LlfError(
            f"--launcher ray needs the `ray` package, which {sys.executable} cannot import",
            fix="pip install 'ray[default]' on every node and start the cluster (`ray start --head` here, "
                "`ray start --address=HEAD:6379` on the others), or use --launcher ssh",
        )
    cmd = plan.commands[0]
    argv = [resolve_program(cmd.argv[0]), *cmd.argv[1:]]
    if plan.rendered.verb != "train":
        return argv, dict(cmd.env)
    if plan.rendered.layout.device == "cpu":
        raise LlfError("LLaMA-Factory 0.9.5's Ray path reserves 10 CPUs and one accelerator per device "
                       "(train/trainer_utils.py get_placement_group), so it cannot place CPU ranks",
                       fix="use --launcher ssh for CPU processes, or --launcher ray with --device cuda|npu")
    missing = [m for m in _RAY_DASHBOARD_DEPS if importlib.util.find_spec(m) is None]
    if missing and "master_addr" not in plan.rendered.config:
        raise LlfError("LLaMA-Factory 0.9.5's Ray path asks Ray's dashboard for the head node's address, and this "
                       f"ray has no dashboard ({', '.join(missing)} missing)",
                       fix='pip install "ray[default]" on every node, or give the head node\'s address as Ray lists '
                           "it (`ray status`): --set master_addr=IP")
    torchrun_keys = {"FORCE_TORCHRUN", "NNODES", "NODE_RANK", "NPROC_PER_NODE", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in cmd.env.items() if k not in torchrun_keys}
    env["USE_RAY"] = "1"
    return [*argv, f"ray_num_workers={plan.rendered.layout.world_size}"], env


def _ray_jobs(plan: StagePlan, log_dir: Path) -> list[NodeJob]:
    argv, env = ray_driver(plan)
    local = [sys.executable, "-c", WATCHDOG, str(STOP_GRACE_S), *argv]
    return [NodeJob(0, "ray driver", "[ray] ", local, {**os.environ, **env}, log_dir / f"llf-{plan.stage}.ray.log")]


def execute_nodes(plan: StagePlan, log_dir: Path, launcher: str, ssh_config: str | None) -> int | None:
    """Run one stage on every node of its layout; the exit code (0 = every rank succeeded), None for `print`."""
    if launcher == "print":
        print_commands(plan)
        return None
    if launcher == "ray":
        jobs = _ray_jobs(plan, log_dir)
    elif launcher == "ssh":
        cfg = _ssh_config_path(ssh_config)
        preflight(plan, cfg)
        jobs = _node_jobs(plan, log_dir, cfg)
    else:
        raise LlfError(f"unknown launcher {launcher!r}", fix="use local, ssh, print or ray")
    hosts = ", ".join(f"node {j.node_rank} {j.host} -> {j.log_path}" for j in jobs)
    print(f"stage {plan.stage}: starting {len(jobs)} node(s): {hosts}", flush=True)
    code, message = run_jobs(jobs, log_dir / f"llf-{plan.stage}.log")
    if code:
        print(f"error: stage {plan.stage}: {message}", file=sys.stderr, flush=True)
    return code

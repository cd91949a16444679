"""Ray: a cluster a run owns for its lifetime, or one it attaches to.

Owned (`--launcher ssh` for a stage that needs Ray across nodes, or `--launcher ray` without an address): every node
runs `ray start --block` in the foreground under the watchdog, the head first; the driver starts on the head only
once the expected nodes and GPUs have registered; when it ends (or fails, or on Ctrl-C) every node's watchdog stops its
Ray, so no Ray process is left anywhere.

Attached (`--launcher ray --ray-address ADDR`, or RAY_ADDRESS): the cluster is asked first (nodes, GPUs, and whether
the engine's Ray can talk to it: Ray refuses another version), then the driver runs here with RAY_ADDRESS set. The
cluster is never started or stopped; only the driver (and so the jobs it submitted) is.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llf_recipes.errors import LlfError
from llf_recipes.launchers.command import LaunchPlan
from llf_recipes.launchers.jobs import NodeJob, Runner, run_phases
from llf_recipes.launchers.local import resolve_program
from llf_recipes.launchers.ssh import is_local_host, node_job, probe_hosts, ssh_argv, ssh_config_path
from llf_recipes.launchers.watchdog import watchdog_argv

READY_TIMEOUT_S = 180  # every node registered, else the run stops naming the missing ones
PROBE_TIMEOUT_S = 60
# What `ray[default]` adds for the dashboard (ray/dashboard/optional_deps.py), which LLaMA-Factory's Ray path needs.
_RAY_DASHBOARD_DEPS = ("aiohttp", "aiohttp_cors", "opencensus", "prometheus_client")

# Run with the engine's interpreter: what the cluster at argv[1] holds, as one JSON line.
CLUSTER_PROBE = r"""
import json, sys
try:
    import ray
except ImportError as e:
    print(json.dumps({"error": "cannot import ray (%s)" % e})); sys.exit(0)
try:
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
except Exception as e:
    text = " ".join(str(e).split())[:400]  # Ray's version mismatch names both versions over several lines
    print(json.dumps({"error": text or type(e).__name__, "version": ray.__version__})); sys.exit(0)
nodes = [{"ip": n.get("NodeManagerAddress"), "name": n.get("NodeManagerHostname"), "alive": bool(n.get("Alive")),
          "gpus": float((n.get("Resources") or {}).get("GPU", 0)), "npus": float((n.get("Resources") or {}).get("NPU", 0))}
         for n in ray.nodes()]
print(json.dumps({"version": ray.__version__, "nodes": nodes}))
"""


@dataclass(frozen=True)
class RayCluster:
    """A Ray cluster over a layout's nodes: node 0 is the head."""

    hosts: tuple[str, ...]
    port: int
    ray: str  # Ray's CLI in the engine's environment
    python: str  # the engine's interpreter (the driver's, and the one that asks the cluster)
    accelerators_per_node: int  # GPUs (or NPUs) each node offers Ray; 0 on CPU
    device_env: dict[str, str]  # CUDA_VISIBLE_DEVICES and the like, per node
    accelerator: str = "GPU"

    @property
    def address(self) -> str:
        return f"{self.hosts[0]}:{self.port}"

    def start_argv(self, rank: int, block: bool = True) -> list[str]:
        host = self.hosts[rank]
        argv = [self.ray, "start", *(["--block"] if block else [])]
        argv += ["--head", f"--port={self.port}"] if rank == 0 else [f"--address={self.address}"]
        if self.accelerator == "GPU":
            argv.append(f"--num-gpus={self.accelerators_per_node}")
        if _is_ip(host):  # a name is left for Ray to resolve; an address written in the hostfile is the node's own
            argv.append(f"--node-ip-address={host}")
        return argv

    @property
    def expected_accelerators(self) -> int:
        return self.accelerators_per_node * len(self.hosts)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------- asking a cluster


def ask_cluster(python: str, address: str, host: str | None = None, ssh_config: str | None = None) -> dict:
    """What the cluster at `address` holds, asked with `python` here (or on `host` over ssh): {"version", "nodes"}
    or {"error"}."""
    argv = [python, "-c", CLUSTER_PROBE, address]
    if host is not None and not is_local_host(host):
        import shlex

        argv = ssh_argv(host, shlex.join(argv), ssh_config, connect_timeout=5)
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=PROBE_TIMEOUT_S,
                              env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {PROBE_TIMEOUT_S} s"}
    except FileNotFoundError:
        return {"error": f"cannot run {python}"}
    for line in reversed(proc.stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    err = proc.stderr.strip().splitlines()
    return {"error": f"exit code {proc.returncode}: {err[-1] if err else 'no output'}"}


def _registered(info: dict, accelerator: str) -> tuple[list[dict], float]:
    alive = [n for n in info.get("nodes", []) if n.get("alive")]
    key = "npus" if accelerator == "NPU" else "gpus"
    return alive, sum(n.get(key, 0) for n in alive)


def _missing_hosts(hosts: tuple[str, ...], alive: list[dict]) -> list[str]:
    """Hosts (workers; the head answered) whose address no live node has."""
    seen = {n.get("ip") for n in alive} | {n.get("name") for n in alive}
    out = []
    for host in hosts[1:]:
        try:
            ip = socket.gethostbyname(host)
        except OSError:
            ip = host
        if host not in seen and ip not in seen:
            out.append(host)
    return out


def check_cluster(info: dict, address: str, nodes: int, accelerators: int, accelerator: str = "GPU",
                  hosts: tuple[str, ...] = ()) -> str | None:
    """None when the cluster holds `nodes` live nodes and `accelerators` GPUs, else what is missing, in words."""
    if "error" in info:
        return f"the Ray cluster at {address} does not answer: {info['error']}"
    alive, count = _registered(info, accelerator)
    problems = []
    if len(alive) < nodes:
        missing = _missing_hosts(hosts, alive) if hosts else []
        names = f" (missing: {', '.join(missing)})" if missing else ""
        problems.append(f"{len(alive)} of {nodes} nodes registered{names}; live: "
                        + ", ".join(str(n.get("ip")) for n in alive))
    if count < accelerators:
        problems.append(f"{count:g} {accelerator}s registered, the run needs {accelerators}")
    return "; ".join(problems) or None


# ---------------------------------------------------------------- a cluster owned by the run


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _preflight(plan: LaunchPlan, cluster: RayCluster, ssh_config: str | None) -> None:
    from dataclasses import replace

    layout = plan.rendered.layout
    sub = replace(layout, nodes=tuple(layout.nodes[:len(cluster.hosts)]))
    problems = [p for _, p in probe_hosts(sub, ssh_config, tuple(str(f) for f in plan.files), program=cluster.ray)
                if p is not None]
    if problems:
        raise LlfError(f"stage {plan.stage}: preflight found {len(problems)} problem(s); nothing was started\n"
                       + "\n".join(p.format() for p in problems))


def execute_with_cluster(plan: LaunchPlan, log_dir: Path, ssh_config: str | None, cluster: RayCluster,
                         driver_argv: list[str], driver_env: dict[str, str],
                         ready_timeout: float = READY_TIMEOUT_S) -> int:
    """Ray on every node (head first) for as long as the driver runs on the head; the driver's exit code."""
    cfg = ssh_config_path(ssh_config)
    _preflight(plan, cluster, cfg)
    stage = plan.stage
    rays = [node_job(rank, host, cluster.start_argv(rank), dict(cluster.device_env),
                     log_dir / f"llf-{stage}.ray{rank}.log", cfg, label=f"[ray {rank}] ", service=True)
            for rank, host in enumerate(cluster.hosts)]
    head = cluster.hosts[0]
    driver = node_job(0, head, driver_argv, {**driver_env, "RAY_ADDRESS": cluster.address},
                      log_dir / f"llf-{stage}.node0.log", cfg)
    state: dict = {}

    def start_head(runner: Runner) -> list[NodeJob]:
        print(f"stage {stage}: starting Ray's head on {head} ({cluster.address}); log {rays[0].log_path}", flush=True)
        runner.start(rays[0])
        failed = runner.wait(until=lambda: _port_open(head, cluster.port), timeout=ready_timeout)
        if not failed and not _port_open(head, cluster.port):
            raise LlfError(f"stage {stage}: Ray's head on {head} did not open port {cluster.port} within "
                           f"{ready_timeout:.0f} s; nothing else was started", where=str(rays[0].log_path),
                           fix="read the head's log; pick another port with --set ray_port=PORT")
        return failed

    def start_workers(runner: Runner) -> list[NodeJob]:
        for job in rays[1:]:
            runner.start(job)
        need = f"{len(cluster.hosts)} node(s)" + (f" and {cluster.expected_accelerators} {cluster.accelerator}s"
                                                  if cluster.expected_accelerators else "")
        print(f"stage {stage}: waiting for {need} to register with Ray", flush=True)

        def ready() -> bool:
            state["info"] = ask_cluster(cluster.python, cluster.address, head, cfg)
            state["why"] = check_cluster(state["info"], cluster.address, len(cluster.hosts),
                                         cluster.expected_accelerators, cluster.accelerator, cluster.hosts)
            return state["why"] is None

        started = time.time()
        failed = runner.wait(until=ready, timeout=ready_timeout)
        if not failed and state.get("why"):
            raise LlfError(f"stage {stage}: after {time.time() - started:.0f} s, {state['why']}; the driver was not "
                           "started and Ray was stopped on every node",
                           fix="read the nodes' Ray logs (" + ", ".join(str(j.log_path) for j in rays[1:]) + "); "
                               "every node must reach the head's port and offer its GPUs")
        return failed

    def run_driver(runner: Runner) -> list[NodeJob]:
        print(f"stage {stage}: Ray is up on {len(cluster.hosts)} node(s); starting the driver on {head}", flush=True)
        runner.start(driver)
        return runner.wait()

    code, message = run_phases(log_dir / f"llf-{stage}.log", [start_head, start_workers, run_driver], stage)
    if code:
        print(f"error: stage {stage}: {message}", file=sys.stderr, flush=True)
    else:
        print(f"stage {stage}: driver finished; Ray stopped on {len(cluster.hosts)} node(s)", flush=True)
    return code


# ---------------------------------------------------------------- a cluster the run attaches to


def ray_address(given: str | None) -> str | None:
    return given or os.environ.get("RAY_ADDRESS") or None


def execute_attached(plan: LaunchPlan, log_dir: Path, address: str, python: str, driver_argv: list[str],
                     driver_env: dict[str, str], nodes: int, accelerators: int, accelerator: str = "GPU",
                     hosts: tuple[str, ...] = ()) -> int:
    """Check the running cluster, then run only the driver here against it."""
    info = ask_cluster(python, address)
    why = check_cluster(info, address, nodes, accelerators, accelerator, hosts)
    if why:
        raise LlfError(f"stage {plan.stage}: {why}; nothing was started",
                       fix="start the cluster first (`ray start --head` on one node, `ray start --address=HEAD:PORT` "
                           "on the others, with the engine's Ray version), or point --ray-address at it")
    alive, count = _registered(info, accelerator)
    print(f"stage {plan.stage}: attached to Ray {info.get('version')} at {address}: {len(alive)} node(s), "
          f"{count:g} {accelerator}s; it stays up after the run", flush=True)
    job = NodeJob(0, "ray driver", "[ray] ", watchdog_argv(driver_argv), {**os.environ, **driver_env,
                  "RAY_ADDRESS": address}, log_dir / f"llf-{plan.stage}.ray.log")

    def run(runner: Runner) -> list[NodeJob]:
        runner.start(job)
        return runner.wait()

    code, message = run_phases(log_dir / f"llf-{plan.stage}.log", [run], plan.stage)
    if code:
        print(f"error: stage {plan.stage}: {message}", file=sys.stderr, flush=True)
    return code


# ---------------------------------------------------------------- LLaMA-Factory's own Ray path


def llamafactory_driver(plan: LaunchPlan) -> tuple[list[str], dict[str, str]]:
    """LLaMA-Factory's Ray path runs one driver (USE_RAY=1) that places ray_num_workers workers over the cluster
    itself, so no torchrun variables. Returns the argv and the variables it sets."""
    import importlib.util

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


ray_driver = llamafactory_driver


def cluster_for_layout(layout, port: int, python: str | None = None) -> RayCluster:
    """A cluster over every node of `layout` with the Ray beside `python` (default: this interpreter)."""
    python = python or sys.executable
    ray = str(Path(python).parent / "ray") if os.sep in python else "ray"
    accelerator = "NPU" if layout.device == "npu" else "GPU"
    per_node = 0 if layout.device == "cpu" else layout.per_node
    var = "ASCEND_RT_VISIBLE_DEVICES" if layout.device == "npu" else "CUDA_VISIBLE_DEVICES"
    env = {var: "" if layout.device == "cpu" else layout.visible_devices()}
    return RayCluster(tuple(n.host for n in layout.nodes), port, ray, python, per_node, env, accelerator)

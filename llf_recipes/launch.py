"""Plan: a rendered stage + a layout -> the files to write and one command (argv + environment) per node."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from llf_recipes.engines.env import EngineEnv
from llf_recipes.errors import LlfError
from llf_recipes.hardware import HostLayout
from llf_recipes.render import RenderedStage, deepspeed_target

NCCL_PRESETS = {
    # InfiniBand fabrics: keep IB on, make NCCL say what it picked.
    "ib": {"NCCL_IB_DISABLE": "0", "NCCL_DEBUG": "WARN"},
    # Plain Ethernet: the usual cure for multi-node hangs on machines without IB.
    "socket": {"NCCL_IB_DISABLE": "1", "NCCL_P2P_DISABLE": "0", "NCCL_DEBUG": "WARN"},
}


def nccl_env(spec: str) -> dict[str, str]:
    """`--nccl ib|socket[:IFACE]`: a preset, optionally pinned to an interface (socket: NCCL_SOCKET_IFNAME and
    GLOO_SOCKET_IFNAME, e.g. socket:eth0; ib: NCCL_IB_HCA, e.g. ib:mlx5_0)."""
    name, _, iface = spec.partition(":")
    if name not in NCCL_PRESETS or (":" in spec and not iface.strip()):
        raise LlfError(f"--nccl {spec!r} is not a preset",
                       fix=f"use one of {', '.join(sorted(NCCL_PRESETS))}, optionally with an interface: "
                           "socket:eth0, ib:mlx5_0")
    env = dict(NCCL_PRESETS[name])
    if iface and name == "socket":
        env.update(NCCL_SOCKET_IFNAME=iface, GLOO_SOCKET_IFNAME=iface)
    elif iface:
        env["NCCL_IB_HCA"] = iface
    return env


@dataclass(frozen=True)
class NodeCommand:
    node_rank: int
    host: str
    argv: tuple[str, ...]
    env: dict[str, str]  # only what llf-recipes sets; the rest is inherited

    def shell_line(self) -> str:
        """For display and `--launcher print` only; execution always uses argv."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"{env} {shlex.join(self.argv)}".strip()


@dataclass(frozen=True)
class StagePlan:
    rendered: RenderedStage
    config_path: Path
    files: tuple[Path, ...]  # what is written before launch: the YAML, then the DeepSpeed JSON if any
    torchrun: bool
    commands: tuple[NodeCommand, ...]
    engine: EngineEnv | None = None  # the environment that runs it; None: llf-recipes' own

    @property
    def stage(self) -> str:
        return self.rendered.stage.name


def needs_torchrun(rendered: RenderedStage) -> bool:
    """LLaMA-Factory uses torchrun for `train` only; DeepSpeed always needs it, even on one device."""
    if rendered.verb != "train":
        return False
    return rendered.layout.world_size > 1 or bool(rendered.config.get("deepspeed"))


def config_path_for(rendered: RenderedStage) -> Path:
    out = rendered.output_dir or f"{rendered.variables.get('output_root', 'saves')}/{rendered.recipe.name}/{rendered.stage.name}"
    return Path(out) / f"llf-{rendered.stage.name}.yaml"


def _device_env(layout: HostLayout) -> dict[str, str]:
    if layout.device == "npu":
        return {"ASCEND_RT_VISIBLE_DEVICES": layout.visible_devices()}
    if layout.device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": ""}
    return {"CUDA_VISIBLE_DEVICES": layout.visible_devices()}


def plan_stage(rendered: RenderedStage, nccl: str | None = None, engine: EngineEnv | None = None) -> StagePlan:
    layout = rendered.layout
    torchrun = needs_torchrun(rendered)
    path = config_path_for(rendered)
    ds_path = deepspeed_target(rendered, path.parent)
    if ds_path is not None:
        rendered.config["deepspeed"] = str(ds_path)
    # An engine of its own runs its own llamafactory-cli, by path (and its torchrun: see `stream`).
    argv = (engine.program("llamafactory-cli") if engine else "llamafactory-cli", rendered.verb, str(path))
    nodes = layout.nodes if rendered.verb == "train" else layout.nodes[:1]
    preset = nccl_env(nccl) if nccl else {}
    commands = []
    for rank, node in enumerate(nodes):
        env = _device_env(layout)
        if torchrun:
            env.update(
                FORCE_TORCHRUN="1",
                NNODES=str(layout.nnodes),
                NODE_RANK=str(rank),
                NPROC_PER_NODE=str(layout.per_node),
                MASTER_ADDR=layout.master_addr,
                MASTER_PORT=str(layout.master_port),
            )
        if layout.device == "cuda":
            env.update(preset)
        commands.append(NodeCommand(rank, node.host, argv, env))
    files = (path, ds_path) if ds_path is not None else (path,)
    return StagePlan(rendered, path, files, torchrun, tuple(commands), engine)


def execute_local(plan: StagePlan, log_path: Path) -> int:
    """Run a single-node stage: stream output to the terminal and a log file; Ctrl-C stops the whole process group."""
    (command,) = plan.commands
    return stream(command.argv, command.env, log_path)


def stream(argv: tuple[str, ...] | list[str], env: dict[str, str], log_path: Path, echo=None) -> int:
    """Run `argv` under the nodes' watchdog, its whole output to `log_path` and what the terminal should see of it
    through `echo` (default: warnings and errors only, everything with --verbose; see console.EngineEcho).

    The watchdog stops the command's whole process tree when its stdin closes, so it goes with this process even when
    this one is SIGKILLed; Ctrl-C (or any exception here) stops it the same way and returns 130.
    """
    from llf_recipes.console import EngineEcho
    from llf_recipes.launchers.watchdog import STOP_GRACE_S, watchdog_argv  # the one watchdog every launcher shares

    echo = echo or EngineEcho()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env}
    program = [resolve_program(argv[0]), *argv[1:]]
    full_env["PATH"] = engine_path(program[0], full_env.get("PATH", ""))
    argv = watchdog_argv(program)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, env=full_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                echo(line)
            return proc.wait()
        except KeyboardInterrupt:
            _stop_watched(proc, STOP_GRACE_S)
            return 130
        finally:
            if proc.poll() is None:
                _stop_watched(proc, STOP_GRACE_S)


def engine_path(program: str, path: str) -> str:
    """PATH with the program's own `bin/` first, so what it starts by name (LLaMA-Factory's `torchrun`) comes from
    the same environment, not from whichever environment is first on the caller's PATH."""
    if not os.path.isabs(program):
        return path
    own = os.path.dirname(program)
    return os.pathsep.join([own, *[p for p in path.split(os.pathsep) if p and p != own]])


def resolve_program(name: str) -> str:
    """A console script on PATH, else the one beside this interpreter (a virtualenv that is not activated)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def _stop_watched(proc, grace: float) -> None:
    """Closing the watchdog's stdin (and SIGTERM) makes it stop the tree, escalating to SIGKILL after `grace`."""
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.terminate()
        proc.wait(timeout=grace + 5)
    except (OSError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

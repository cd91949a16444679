"""Plan: a rendered stage + a layout -> the files to write and one command (argv + environment) per node.

Running the commands is the launchers' part (llf_recipes/launchers), which know nothing of this module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llf_recipes.engines.env import EngineEnv
from llf_recipes.errors import LlfError
from llf_recipes.launchers.command import NodeCommand
from llf_recipes.render import RenderedStage, deepspeed_target, needs_torchrun

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

    @property
    def checks_own_data(self) -> bool:
        """False: LLaMA-Factory reads the stage's datasets by name, so the pipeline checks they are registered."""
        return False


def config_path_for(rendered: RenderedStage) -> Path:
    return rendered.run_dir / f"llf-{rendered.stage.name}.yaml"


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
        env = layout.device_env()
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

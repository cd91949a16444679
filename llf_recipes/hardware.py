"""Hardware layouts: GPU lists, DeepSpeed-style hostfiles, batch arithmetic and DeepSpeed profile choice."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llf_recipes.errors import LlfError

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
DEFAULT_MASTER_PORT = 29500
_HOST_RE = re.compile(r"^[A-Za-z0-9_.:\-\[\]]+$")


@dataclass(frozen=True)
class Node:
    host: str
    slots: int
    line: int = 0  # line in the hostfile, 0 for a --gpus layout


@dataclass(frozen=True)
class HostLayout:
    """Where the ranks of one run live: one or more nodes with the same number of devices each."""

    nodes: tuple[Node, ...]
    device: str = "cuda"  # cuda | npu | cpu
    device_ids: tuple[int, ...] | None = None  # explicit --gpus list; None = first `slots` devices
    source: str = "default"  # "--gpus 0,1", a hostfile path, or "default"
    master_port: int = DEFAULT_MASTER_PORT

    @property
    def nnodes(self) -> int:
        return len(self.nodes)

    @property
    def per_node(self) -> int:
        return self.nodes[0].slots

    @property
    def world_size(self) -> int:
        return self.nnodes * self.per_node

    @property
    def master_addr(self) -> str:
        host = self.nodes[0].host
        return "127.0.0.1" if self.nnodes == 1 and host in LOCAL_HOSTS else host

    @property
    def multi_node(self) -> bool:
        return self.nnodes > 1

    def visible_devices(self) -> str:
        ids = self.device_ids if self.device_ids is not None else range(self.per_node)
        return ",".join(str(i) for i in ids)

    def device_env(self) -> dict[str, str]:
        """The variable that shows a node's processes their devices (none at all on CPU)."""
        if self.device == "cpu":
            return {"CUDA_VISIBLE_DEVICES": ""}
        var = "ASCEND_RT_VISIBLE_DEVICES" if self.device == "npu" else "CUDA_VISIBLE_DEVICES"
        return {var: self.visible_devices()}

    def describe(self) -> str:
        unit = {"cuda": "GPU", "npu": "NPU", "cpu": "CPU process"}[self.device]
        plural = unit + ("es" if unit.endswith("s") else "s")
        if self.nnodes == 1:
            return f"1 node x {self.per_node} {unit if self.per_node == 1 else plural}"
        return f"{self.nnodes} nodes x {self.per_node} {unit if self.per_node == 1 else plural} = {self.world_size}"


MAX_DEVICES = 1024  # more than any one machine has; a longer range is a typo


def is_index(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '²', which int() refuses."""
    return re.fullmatch(r"[0-9]+", text) is not None


def parse_gpus(spec: str, device: str = "cuda") -> HostLayout:
    """`--gpus 0,1,3` or `--gpus 0-3` (a range, both ends included) -> one local node with those devices."""
    example = "give device indices separated by commas, or a range: --gpus 0,1 or --gpus 0-3"
    items = [s.strip() for s in str(spec).split(",")]
    if not any(items):
        raise LlfError(f"--gpus {spec!r} names no device", key="--gpus", fix=example)
    ids: list[int] = []
    for item in items:
        if not item:
            raise LlfError(f"--gpus {spec!r}: an empty item between commas", key="--gpus", fix=example)
        first, dash, last = item.partition("-")
        if not is_index(first.strip()) or (dash and not is_index(last.strip())):
            raise LlfError(f"--gpus {spec!r}: {item!r} is not a device index or a range", key="--gpus",
                           fix="device indices are whole numbers, e.g. --gpus 0,1,2,3 or --gpus 0-3")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise LlfError(f"--gpus {spec!r}: the range {item!r} runs backwards", key="--gpus",
                           fix=f"write it low to high: --gpus {high}-{low}")
        if high - low >= MAX_DEVICES:
            raise LlfError(f"--gpus {spec!r}: the range {item!r} names more than {MAX_DEVICES} devices", key="--gpus",
                           fix="name the devices of this machine, e.g. --gpus 0-7")
        ids.extend(range(low, high + 1))
    if len(set(ids)) != len(ids):
        raise LlfError(f"--gpus {spec!r} lists a device twice", key="--gpus", fix="name each device once")
    return HostLayout(
        nodes=(Node("localhost", len(ids)),), device=device, device_ids=tuple(ids), source=f"--gpus {spec}"
    )


def parse_hostfile_text(text: str, source: str = "<hostfile>", device: str = "cuda") -> HostLayout:
    """Parse DeepSpeed's hostfile format: `host slots=N` per line, `#` comments, blank lines."""
    nodes: list[Node] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        parts = line.split()
        host = parts[0]
        if not _HOST_RE.match(host) or "=" in host or host.startswith("-"):  # `-oProxyCommand=...` is an ssh option
            raise LlfError(f"{where}: {host!r} is not a host name", fix="each line reads `HOST slots=N`; a host name "
                                                                          "does not start with '-'")
        if len(parts) != 2 or not parts[1].startswith("slots="):
            raise LlfError(
                f"{where}: expected `{host} slots=N`, got {raw.strip()!r}",
                fix="each line reads `HOST slots=N`, e.g. `node1 slots=8`",
            )
        value = parts[1][len("slots="):]
        if not is_index(value) or int(value) < 1:
            raise LlfError(f"{where}: slots={value!r} is not a positive whole number", fix="use e.g. slots=8")
        if host in seen:
            raise LlfError(f"{where}: host {host!r} already listed on line {seen[host]}", fix="list each host once")
        seen[host] = lineno
        nodes.append(Node(host, int(value), lineno))
    if not nodes:
        raise LlfError(f"{source}: no hosts found", fix="add lines such as `node1 slots=8`")
    first = nodes[0]
    for node in nodes[1:]:
        if node.slots != first.slots:
            raise LlfError(
                f"{source}:{node.line}: {node.host} has slots={node.slots} but {first.host} (line {first.line}) has "
                f"slots={first.slots}",
                fix="torchrun starts the same number of processes on every node: give every host the same slots",
            )
    return HostLayout(nodes=tuple(nodes), device=device, source=source)


def parse_hostfile(path: str | Path, device: str = "cuda") -> HostLayout:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LlfError(f"hostfile {p} does not exist", fix="check the path, or run `llf-recipes list --hostfiles`")
    except UnicodeDecodeError as exc:
        raise LlfError(f"hostfile {p} is not UTF-8 text ({exc.reason} at byte {exc.start})")
    return parse_hostfile_text(text, source=str(path), device=device)


def cpu_layout(nproc: int = 1) -> HostLayout:
    return HostLayout(nodes=(Node("localhost", nproc),), device="cpu", source="cpu")


def default_layout(device: str = "cuda") -> HostLayout:
    return HostLayout(nodes=(Node("localhost", 1),), device=device, device_ids=(0,), source="default (one device)")


# ---------------------------------------------------------------- batch arithmetic


@dataclass(frozen=True)
class BatchPlan:
    global_batch_size: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    world_size: int


def plan_batch(global_batch: int, max_per_device: int, layout: HostLayout) -> BatchPlan:
    """Split a global batch over the layout: largest per-device batch <= max_per_device that divides evenly."""
    world = layout.world_size
    if global_batch < 1 or max_per_device < 1:
        raise LlfError(
            f"global_batch_size={global_batch} and micro_batch_size={max_per_device} must be positive",
            key="global_batch_size",
        )
    if global_batch % world:
        multiples = sorted({world * k for k in range(1, 5)} | {world * max(1, round(global_batch / world))})
        raise LlfError(
            f"global batch {global_batch} does not divide over {world} devices ({layout.describe()}): "
            f"{global_batch} % {world} = {global_batch % world}",
            key="global_batch_size",
            fix=f"use a global_batch_size that is a multiple of {world} (e.g. "
            f"{', '.join(map(str, multiples[:4]))}), or a layout with a device count that divides {global_batch}",
        )
    per_rank = global_batch // world
    per_device = max(d for d in range(1, min(per_rank, max_per_device) + 1) if per_rank % d == 0)
    return BatchPlan(global_batch, per_device, per_rank // per_device, world)


# ---------------------------------------------------------------- DeepSpeed profile choice

DEEPSPEED_PROFILES = ("z0", "z1", "z2", "z2_offload", "z3", "z3_offload")


def choose_deepspeed(layout: HostLayout, request: str | None = "auto", offload: bool = False) -> str | None:
    """Pick a DeepSpeed profile name: none on one device, ZeRO-2 on one node, ZeRO-3 across nodes.

    `request` is the recipe's `deepspeed` setting: auto, none, or a profile name that is used as is.
    """
    req = (request or "none").lower() if not isinstance(request, bool) else ("auto" if request else "none")
    if req in ("none", "off", "false"):
        return None
    if req != "auto":
        if req not in DEEPSPEED_PROFILES:
            raise LlfError(
                f"deepspeed profile {request!r} is unknown",
                key="deepspeed",
                fix=f"use auto, none or one of {', '.join(DEEPSPEED_PROFILES)}",
            )
        return req
    if layout.device == "cpu":
        return None
    if layout.world_size == 1 and not offload:
        return None
    stage = "z3" if layout.multi_node else "z2"
    return f"{stage}_offload" if offload else stage

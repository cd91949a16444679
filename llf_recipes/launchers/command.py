"""What a launcher is handed: one command per node, and the plan that holds them (as far as launchers read it)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Protocol


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


class LaunchPlan(Protocol):
    """A planned stage as launchers see it (launch.StagePlan, engines' GrpoPlan): its name, its per-node commands and
    the rendered stage whose layout they run on; a plan whose engine needs a Ray cluster also has `ray`."""

    rendered: Any
    commands: tuple[NodeCommand, ...]
    torchrun: bool

    @property
    def stage(self) -> str: ...

"""What every rule shares: a finding, the launch a config is checked for, and a config read with LLaMA-Factory's
defaults (an absent key has the value the argument dataclass gives it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llf_recipes.schema import SUPPORTED_VERSION, keys_for


@dataclass(frozen=True)
class Finding:
    rule: str
    key: str
    message: str
    fix: str
    stage: str | None = None
    severity: str = "error"  # error | warning

    def format(self) -> str:
        where = f"[{self.stage}] " if self.stage else ""
        return f"{self.severity}: {where}{self.key}: {self.message}\n  fix: {self.fix}  (rule {self.rule})"


@dataclass(frozen=True)
class LaunchInfo:
    """How the config is started: under torchrun (LLaMA-Factory's distributed mode), on how many processes, and
    whether some of its nodes are other machines (whose installed packages cannot be seen from here)."""

    torchrun: bool = False
    world_size: int = 1
    remote: bool = False


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return type(value).__name__


def names(value: Any) -> list[str]:
    """A comma-list key's items, as LLaMA-Factory splits them (`a, b` or a YAML list)."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(i).strip() for i in items if str(i).strip()]


@dataclass
class Settings:
    """A config as the argument dataclasses see it: a key that is absent reads as its default."""

    config: dict[str, Any]
    verb: str = "train"
    version: str = SUPPORTED_VERSION  # the LLaMA-Factory version whose defaults apply
    keys: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.keys = keys_for(self.verb, self.version)

    def __getitem__(self, key: str) -> Any:
        if key in self.config:
            return self.config[key]
        return (self.keys.get(key) or {}).get("default")

    def set(self, key: str) -> bool:
        """Whether the key is given a value other than null."""
        return self.config.get(key) is not None

    def on(self, key: str) -> bool:
        value = self[key]
        return value is True or (isinstance(value, (int, float)) and not isinstance(value, bool) and value != 0)

    def number(self, key: str) -> float | None:
        value = self[key]
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def text(self, key: str) -> str | None:
        value = self[key]
        return value if isinstance(value, str) else None


class Collector:
    """Findings of one config, each tagged with the stage they belong to."""

    def __init__(self, stage: str | None) -> None:
        self.stage = stage
        self.findings: list[Finding] = []

    def add(self, rule: str, key: str, message: str, fix: str, severity: str = "error") -> None:
        self.findings.append(Finding(rule, key, message, fix, self.stage, severity))


Check = Callable[..., None]

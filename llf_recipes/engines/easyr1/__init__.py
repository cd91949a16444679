"""EasyR1 (verl) as the engine of multi-node GRPO: where its environment and checkout are, and Ray's CLI beside it.

config.py renders EasyR1's config and files from a GRPO stage, rules.py checks that config against the snapshot of
EasyR1's dataclasses (snapshot.py regenerates it), plan.py plans and writes a stage, nodes.py asks every node's
environment, checkpoints.py turns a finished run into a model, check.py loads configs with EasyR1's own classes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llf_recipes.engines.env import EngineEnv
from llf_recipes.engines.env import resolve as resolve_engine


def easyr1_engine(settings: dict[str, Any], overrides: dict[str, str] | None = None) -> EngineEnv:
    """EasyR1's environment: --engine easyr1=PYTHON, the stage's `easyr1_python`, $LLF_ENGINE_EASYR1,
    $LLF_EASYR1_PYTHON, the engines file, `llf-recipes engine install easyr1`, else python3 on PATH."""
    return resolve_engine("easyr1", overrides, extra=settings.get("easyr1_python"))


def easyr1_python(settings: dict[str, Any]) -> str:
    return easyr1_engine(settings).python


def easyr1_dir(settings: dict[str, Any]) -> str | None:
    return settings.get("easyr1_dir") or os.environ.get("LLF_EASYR1_DIR")


def ray_program(python: str) -> str:
    """Ray's CLI from EasyR1's environment: beside its interpreter when that is a path, else on PATH."""
    if os.sep in python:
        return str(Path(python).parent / "ray")
    return "ray"

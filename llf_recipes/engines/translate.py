"""Key translations from the recipes' dialect (LLaMA-Factory 0.9.5 on transformers 5) to an older engine's.

Each translation rewrites a config in place and returns one line saying what it changed (None when nothing), which
`show` and `run --dry-run` list. Translations are idempotent: a translated config is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Translation = Callable[[dict[str, Any]], "str | None"]


def warmup_steps_as_ratio(config: dict[str, Any]) -> str | None:
    """transformers 5 reads a `warmup_steps` below 1 as a share of all steps; transformers 4 takes whole steps only
    (a float is refused), and says the share with `warmup_ratio`."""
    value = config.get("warmup_steps")
    if isinstance(value, bool) or not isinstance(value, float):
        return None
    if 0 <= value < 1:
        del config["warmup_steps"]
        config["warmup_ratio"] = value
        return f"warmup_steps: {value} -> warmup_ratio: {value} (transformers 4 takes warmup_steps as whole steps only)"
    if value.is_integer():
        config["warmup_steps"] = int(value)
        return f"warmup_steps: {value} -> {int(value)} (transformers 4 takes warmup_steps as whole steps only)"
    return None

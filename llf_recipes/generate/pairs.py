"""`pairs`: a preference dataset from a model's own scored answers (best vs worst per prompt), registered with
`ranking: true` so a DPO stage can train on it.

A prompt gives a pair when at least two of its answers were scored and the best beats the worst by more than the
margin; ties (equal scores or the same text) and pairs within the margin are dropped and counted. The file is
ShareGPT-shaped with the role names LLaMA-Factory's aligned rows use (user/assistant), so multi-turn prompts and
system prompts pass through unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llf_recipes.data.preference import entry
from llf_recipes.errors import LlfError


@dataclass
class Outcome:
    pairs: list[dict[str, Any]] = field(default_factory=list)
    ties: int = 0
    below_margin: int = 0
    unscored: int = 0  # prompts with fewer than two scored answers


def build(rows: list[dict[str, Any]], min_margin: float = 0.0) -> Outcome:
    out = Outcome()
    for row in rows:
        scores = row.get("scores")
        if not isinstance(scores, list):
            raise LlfError(f"row {row.get('index')} has no scores", fix="score the answers first "
                           "(llf-recipes judge ... or llf-recipes score ... --reward-model RUN)")
        scored = [(s, a) for s, a in zip(scores, row["answers"]) if isinstance(s, (int, float))]
        if len(scored) < 2:
            out.unscored += 1
            continue
        best = max(scored, key=lambda x: x[0])
        worst = min(scored, key=lambda x: x[0])
        margin = best[0] - worst[0]
        if margin == 0 or best[1] == worst[1]:
            out.ties += 1
            continue
        if margin < min_margin:
            out.below_margin += 1
            continue
        turns = [{"role": m["role"], "content": m["content"]} for m in row.get("prompt") or []]
        out.pairs.append({"conversations": turns, "chosen": {"role": "assistant", "content": best[1]},
                          "rejected": {"role": "assistant", "content": worst[1]}, "system": row.get("system") or "",
                          "index": row["index"], "scores": [best[0], worst[0]]})
    return out


def write_and_register(outcome: Outcome, name: str, data_dir: Path, force: bool = False) -> Path:
    """`<data_dir>/<name>.json` and its `dataset_info.json` entry, the entry checked before the file is written."""
    from llf_recipes.atomic import write_text
    from llf_recipes.data.registry import register

    if not outcome.pairs:
        raise LlfError("no pair left: every prompt was a tie, within the margin, or had fewer than two scored answers",
                       fix="generate more answers per prompt (--num-return) or lower --min-margin")
    path = data_dir / f"{name}.json"
    register(data_dir, {name: entry(path.name)}, force=force, dry_run=True)  # a clash stops before any write
    write_text(path, json.dumps(outcome.pairs, ensure_ascii=False, indent=1) + "\n")
    register(data_dir, {name: entry(path.name)}, force=force)
    return path

"""How many rows of each dataset a training config's mix gives, as LLaMA-Factory 0.9.5 merges them.

Each dataset is first cut to `max_samples`. `concat` keeps every row. The interleave strategies call datasets'
interleave_datasets: `interleave_under` stops when the first dataset runs out (first_exhausted), `interleave_over` when
the last does, repeating the others (all_exhausted), `interleave_once` when every row was taken once. With
`interleave_probs` each row comes from dataset i with probability p_i, so dataset i runs out after about n_i / p_i rows
in all; without them the datasets take turns. The figures are expectations: a seeded draw lands near them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Mix:
    strategy: str
    rows: dict[str, float]  # dataset -> expected rows in the merged set
    stops_on: str | None  # the dataset whose end stops the merge, when one does

    @property
    def total(self) -> float:
        return sum(self.rows.values())


def _names(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [str(i).strip() for i in items if str(i).strip()]


def expected_mix(config: dict[str, Any], counts: dict[str, int]) -> Mix | None:
    """The mix of `config`'s `dataset` list given each dataset's row count; None for fewer than two datasets or one
    whose count is unknown."""
    names = _names(config.get("dataset"))
    if len(names) < 2 or any(n not in counts for n in names):
        return None
    limit = config.get("max_samples")
    sizes = [min(counts[n], limit) if isinstance(limit, int) else counts[n] for n in names]
    strategy = config.get("mix_strategy") or "concat"
    probs = [float(p) for p in _names(config.get("interleave_probs"))] or None
    if strategy == "concat" or strategy == "interleave_once" or (probs and len(probs) != len(names)):
        return Mix(strategy, dict(zip(names, map(float, sizes))), None)
    if probs is None:  # turns: every dataset gives as many rows as the one that stops the merge
        stop = min(range(len(names)), key=sizes.__getitem__) if strategy == "interleave_under" else \
            max(range(len(names)), key=sizes.__getitem__)
        return Mix(strategy, {n: float(sizes[stop]) for n in names}, names[stop])
    ends = [size / p if p > 0 else float("inf") for size, p in zip(sizes, probs)]
    candidates = [i for i, p in enumerate(probs) if p > 0]
    pick = min if strategy == "interleave_under" else max
    stop = pick(candidates, key=ends.__getitem__)
    total = ends[stop]
    return Mix(strategy, {n: total * p for n, p in zip(names, probs)}, names[stop])


def describe(mix: Mix) -> str:
    total = mix.total or 1.0
    parts = ", ".join(f"{name} {rows:,.0f} ({rows / total:.0%})" for name, rows in mix.rows.items())
    stop = f"; stops when {mix.stops_on} runs out" if mix.stops_on and mix.strategy == "interleave_under" else \
        f"; {mix.stops_on} sets the length, the others repeat" if mix.stops_on else ""
    return f"{mix.strategy}: about {mix.total:,.0f} rows: {parts}{stop}"

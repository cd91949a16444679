"""Base -> run comparisons from evaluation_results.json: every metric and benchmark both have, the delta, whether it
is better or worse, and a short reading of what improved and what regressed. Reads results only: no torch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llf_recipes.eval.benchmarks import headline

# (key, label, higher is better); GRPO keys live under record["grpo"], general accuracy under record["general"].
METRICS = (("test_loss", "test loss", False), ("perplexity", "perplexity", False),
           ("preference_accuracy", "preference accuracy", True), ("loss_margin", "preference margin", True),
           ("accuracy", "GRPO accuracy", True), ("format_rate", "GRPO format rate", True),
           ("mean_reward", "GRPO mean reward", True), ("general_accuracy", "general accuracy", True))


@dataclass
class Row:
    run: str
    base: str
    label: str
    base_value: float
    value: float
    verdict: str  # better | worse | same | noise
    stderr: float | None = None  # combined standard error, benchmarks only

    @property
    def delta(self) -> float:
        return self.value - self.base_value


def metric(record: dict[str, Any], key: str) -> float | None:
    if key == "general_accuracy":
        value = (record.get("general") or {}).get("accuracy")
    elif key in ("accuracy", "format_rate", "mean_reward"):
        value = (record.get("grpo") or {}).get(key)
    else:
        value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _verdict(delta: float, higher_better: bool, noise: float | None = None) -> str:
    if delta == 0:
        return "same"
    if noise is not None and abs(delta) <= noise:
        return "noise"
    return "better" if (delta > 0) == higher_better else "worse"


def base_of(name: str, record: dict[str, Any], results: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    base = record.get("baseline")
    if isinstance(base, str) and isinstance(results.get(base), dict):
        return base, results[base]
    return None


def rows(results: dict[str, Any]) -> list[Row]:
    """One row per run and metric that it and its base both have (eval's metrics, then benchmarks)."""
    out = []
    for name, record in results.items():
        if not isinstance(record, dict) or not (found := base_of(name, record, results)):
            continue
        base_name, base = found
        for key, label, higher in METRICS:
            a, b = metric(base, key), metric(record, key)
            if a is not None and b is not None:
                out.append(Row(name, base_name, label, a, b, _verdict(b - a, higher)))
        out += _benchmark_rows(name, record, base_name, base)
    return out


def _benchmark_rows(name: str, record: dict[str, Any], base_name: str, base: dict[str, Any]) -> list[Row]:
    out = []
    mine, theirs = record.get("benchmarks") or {}, base.get("benchmarks") or {}
    for task in mine:
        if task not in theirs:
            continue
        label, value, err = headline(mine[task].get("metrics") or {})
        _, base_value, base_err = headline(theirs[task].get("metrics") or {})
        if value is None or base_value is None:
            continue
        noise = math.hypot(err, base_err) if err is not None and base_err is not None else None
        out.append(Row(name, base_name, f"{task} {label.split(',')[0]}", base_value, value,
                       _verdict(value - base_value, not label.startswith(("perplexity", "word_perplexity")), noise),
                       noise))
    return out


def benchmark_table(results: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """(tasks, rows): every entry with benchmarks (bases first), each task's headline metric with its stderr."""
    entries = [(n, r) for n, r in results.items() if isinstance(r, dict) and r.get("benchmarks")]
    entries.sort(key=lambda e: 0 if e[1].get("method") == "base" else 1)
    tasks = list(dict.fromkeys(t for _, r in entries for t in r["benchmarks"]))
    table = []
    for name, record in entries:
        cells = []
        for task in tasks:
            label, value, err = headline(((record["benchmarks"].get(task) or {}).get("metrics")) or {})
            cells.append({"metric": label.split(",")[0], "value": value, "stderr": err})
        table.append({"name": name, "method": record.get("method"), "cells": cells})
    return tasks, table


def reading(results: dict[str, Any], compared: list[Row] | None = None) -> list[str]:
    """One sentence per run: what improved over its base, what regressed, and the forgetting verdict."""
    compared = rows(results) if compared is None else compared
    lines = []
    for name in dict.fromkeys(r.run for r in compared):
        mine = [r for r in compared if r.run == name]
        better = [f"{r.label} {_fmt(r.base_value)} → {_fmt(r.value)}" for r in mine if r.verdict == "better"]
        worse = [f"{r.label} {_fmt(r.base_value)} → {_fmt(r.value)}" for r in mine if r.verdict == "worse"]
        parts = []
        if better:
            parts.append("improved " + ", ".join(better))
        if worse:
            parts.append("regressed " + ", ".join(worse))
        if not parts:
            parts.append("no change beyond noise against its base")
        check = (results.get(name) or {}).get("forgetting") or {}
        if check.get("checked"):
            parts.append(f"forgetting check {'FAILED' if check['flagged'] else 'passed'} (general accuracy drop "
                         f"{check['drop']:+.3f}, allowed {check['max_drop']:.3f})")
        lines.append(f"{name}: " + "; ".join(parts) + ".")
    return lines


def _fmt(value: float) -> str:
    return f"{value:.4g}"

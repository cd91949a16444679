"""What a run's trainer_state.json says: the seed's training metrics, the curves, and a reading of them.

Nothing here imports torch: `report` draws from it without loading a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llf_recipes import manifest
from llf_recipes.progress import flatten_keys

# Curves the report draws, by trainer_state key. DPO-family trainers log rewards/*; eval_ keys come from evaluations.
CURVES = ("loss", "eval_loss", "rewards/margins", "eval_rewards/margins", "rewards/accuracies",
          "eval_rewards/accuracies", "learning_rate", "grad_norm",
          # GRPO (TRL's names): the group reward, its spread, KL to the reference, completion length, clipping.
          "reward", "reward_std", "kl", "completions/mean_length", "clip_ratio/region_mean", "clip_ratio/low_mean",
          "clip_ratio/high_mean")
# EasyR1's experiment_log.jsonl names, mapped onto TRL's; other reward/<name> keys become rewards/<name>/mean.
EASYR1_KEYS = {"reward/overall": "reward", "actor/kl_loss": "kl", "actor/kl_penalty": "kl",
               "response_length/mean": "completions/mean_length", "actor/pg_clipfrac_higher": "clip_ratio/high_mean",
               "actor/pg_clipfrac_lower": "clip_ratio/low_mean", "actor/pg_loss": "loss", "actor/lr": "learning_rate",
               "actor/grad_norm": "grad_norm"}


def finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _drawn(key: str) -> bool:
    return key in CURVES or (key.startswith("rewards/") and key.endswith(("/mean", "/std"))
                             and key.count("/") == 2)  # a GRPO reward function's mean and std per step


def curves(state: dict[str, Any] | None) -> dict[str, list[tuple[int, float]]]:
    """key -> [(step, value)] for every logged key of CURVES and every GRPO reward function; NaN and inf are kept
    as NaN so a blow-up shows."""
    series: dict[str, list[tuple[int, float]]] = {}
    for entry in (state or {}).get("log_history", []):
        step = entry.get("step")
        if not isinstance(step, int):
            continue
        for key, value in entry.items():
            if _drawn(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(key, []).append((step, float(value) if math.isfinite(value) else math.nan))
    return series


def easyr1_curves(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """The same series from EasyR1's experiment_log.jsonl (one nested JSON object per step), when the run has one."""
    import json

    logs = sorted(Path(run_dir).glob("**/experiment_log.jsonl"))
    series: dict[str, list[tuple[int, float]]] = {}
    if not logs:
        return series
    for line in logs[0].read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = entry.get("step") if isinstance(entry, dict) else None
        if not isinstance(step, int):
            continue
        for key, value in flatten_keys(entry).items():
            name = EASYR1_KEYS.get(key) or (f"rewards/{key[7:]}/mean" if key.startswith("reward/") else None)
            if name and isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(name, []).append((step, float(value) if math.isfinite(value) else math.nan))
    return series


def training_metrics(run_dir: str | Path, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The seed's training keys: initial/final train loss, best/final eval loss, steps, training time."""
    state = manifest.trainer_state(run_dir)
    series = curves(state)
    train = [v for _, v in series.get("loss", []) if not math.isnan(v)]
    evals = [v for _, v in series.get("eval_loss", []) if not math.isnan(v)]
    runtime = None
    for entry in (state or {}).get("log_history", []):
        runtime = finite(entry.get("train_runtime")) or runtime
    if runtime is None and data and data.get("verb") == "train":  # interrupted: no train_runtime; the wall time
        runtime = finite(data.get("duration_s"))
    return {
        "initial_train_loss": train[0] if train else None,
        "final_train_loss": train[-1] if train else None,
        "best_eval_loss": min(evals) if evals else None,
        "final_eval_loss": evals[-1] if evals else None,
        "total_steps": (state or {}).get("global_step"),
        "training_time_seconds": runtime,
        "training_time_hours": runtime / 3600 if runtime is not None else None,
    }


@dataclass
class Finding:
    level: str  # ok | warn | bad
    message: str
    advice: str = ""
    steps: list[int] = field(default_factory=list)


def diagnose(series: dict[str, list[tuple[int, float]]], rel: float = 0.02, smoke: bool = False) -> list[Finding]:
    """Read the loss curves the way one reads a debugger: the pattern, what it usually means, what to try.

    `rel` is the relative change that counts as movement; with fewer than three points nothing is concluded. A smoke
    run (a random tiny model for a few steps) checks that the stage runs: only a NaN in it means something.
    """
    train = series.get("loss", [])
    evals = series.get("eval_loss", [])
    found: list[Finding] = []
    bad = [s for s, v in train + evals if math.isnan(v)]
    if bad:
        found.append(Finding("bad", f"loss became NaN/inf at step {bad[0]}",
                             "exploding gradients, too high a learning rate or a bad row: lower the learning rate, "
                             "check max_grad_norm, look at the batch at that step", bad[:1]))
    clean = [(s, v) for s, v in train if not math.isnan(v)]
    if smoke:
        if not bad and clean:
            found.append(Finding("ok", f"smoke run: {len(clean)} logged step(s) of a random tiny model ran with finite "
                                       "loss", "its loss says nothing about the recipe's learning: run without "
                                               "--smoke to read the curves"))
        return found
    if len(clean) >= 3:
        values = [v for _, v in clean]
        head, tail = _mean(values[: max(1, len(values) // 5)]), _mean(values[-max(1, len(values) // 5):])
        spikes = [s for (s, v), prev in zip(clean[1:], values[:-1]) if prev > 0 and v > 2.0 * prev and v > 2.0 * tail]
        if spikes:
            found.append(Finding("warn", f"train loss spiked at step {spikes[0]}",
                                 "a learning rate too high for that point, or an unusual batch: lower the "
                                 "learning rate or add warm-up, check the data around that step", spikes[:3]))
        if head > 0 and (head - tail) / head < rel:
            advice = "raise the learning rate, check the data format and that loss is computed on the answers"
            if head < 0.1:
                advice = "duplicated or trivial data, or a loss mask that leaves little to learn: check both"
            found.append(Finding("warn", f"train loss is not falling ({head:.4g} -> {tail:.4g})", advice))
    clean_eval = [(s, v) for s, v in evals if not math.isnan(v)]
    if len(clean_eval) >= 3:
        best_step, best = min(clean_eval, key=lambda p: p[1])
        last_step, last = clean_eval[-1]
        train_falling = len(clean) >= 2 and clean[-1][1] < clean[0][1]
        if last > best * (1 + rel) and last_step > best_step and train_falling:
            found.append(Finding("bad", f"overfitting: eval loss rose from {best:.4g} at step {best_step} to "
                                        f"{last:.4g} at step {last_step} while train loss kept falling",
                                 f"use the checkpoint nearest step {best_step}, train fewer epochs, add data or "
                                 "dropout, or enable early stopping", [best_step]))
    if not found and len(clean) >= 3:
        found.append(Finding("ok", "train loss falling" + (" and eval loss with it" if len(clean_eval) >= 2 else ""),
                             "healthy: nothing to change"))
    return found


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def diagnose_grpo(series: dict[str, list[tuple[int, float]]], rel: float = 0.02) -> list[Finding]:
    """A GRPO run's loss is near zero by construction; the reward curve is what to read."""
    reward = [(s, v) for s, v in series.get("reward", []) if not math.isnan(v)]
    spread = [v for _, v in series.get("reward_std", []) if not math.isnan(v)]
    found: list[Finding] = []
    if spread and all(v == 0 for v in spread):
        found.append(Finding("warn", "every completion of a group got the same reward at every step",
                             "zero advantage, so nothing was learned: raise temperature or num_generations, or add "
                             "a reward that tells the answers apart (format, length)"))
    if len(reward) >= 2:
        first, last = reward[0][1], reward[-1][1]
        if last > first + rel * max(abs(first), 1e-9):
            found.append(Finding("ok", f"group reward rose ({first:.4g} -> {last:.4g})", "learning: nothing to change"))
        elif last < first - rel * max(abs(first), 1e-9):
            found.append(Finding("warn", f"group reward fell ({first:.4g} -> {last:.4g})",
                                 "lower the learning rate, or check the rewards reward what you want"))
        else:
            found.append(Finding("warn", f"group reward flat ({first:.4g} -> {last:.4g})",
                                 "more steps, a higher learning rate, or rewards the model can earn"))
    return found

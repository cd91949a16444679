"""`eval`: every run (and, with --baseline, its base model) scored on the same held-out rows into seed 004's
evaluation_results.json, with the deltas base -> run and the forgetting check."""

from __future__ import annotations

from typing import Any

from llf_recipes.eval.compare import METRICS, metric
from llf_recipes.eval.runs import Options, Run, base_run, log
from llf_recipes.eval.training import training_metrics

TEST_KEYS = ("perplexity", "test_loss", "preference_accuracy", "preference_correct", "preference_total",
             "avg_chosen_loss", "avg_rejected_loss", "loss_margin")
# Config keys that decide which rows a model is tested on and how they are encoded: equal keys, one base score.
ROW_KEYS = ("dataset", "eval_dataset", "val_size", "seed", "max_samples", "dataset_dir", "stage", "pref_loss",
            "template", "cutoff_len", "train_on_prompt", "mask_history", "default_system", "enable_thinking",
            "rewards", "format_prompt")


def evaluate(runs: list[Run], options: Options) -> dict[str, Any]:
    """Every run's record; with a baseline (asked for, or needed by the forgetting check) the base entry comes
    first, named base:RUN, and the run's record holds `baseline` (that name) and `delta` per metric."""
    results: dict[str, Any] = {}
    scored: dict[str, dict[str, Any]] = {}  # one score per base and set of rows
    for run in runs:
        record = evaluate_run(run, options)
        if (options.baseline or options.general) and not run.bare:
            base = base_run(run)
            key = repr((base.data["model"]["base"], sorted((k, str(v)) for k, v in base.config.items() if k in ROW_KEYS)))
            if key not in scored:
                scored[key] = evaluate_run(base, options)
            else:
                log(f"{base.name}: the same base and rows as an earlier run, score reused")
            results[base.name] = {**scored[key], "model_name": base.name, "baseline_for": run.name}
            record["baseline"] = base.name
            record["delta"] = deltas(results[base.name], record)
            if options.general:
                record["forgetting"] = forgetting(results[base.name], record, options.max_drop)
        results[run.name] = record
    return results


def deltas(base: dict[str, Any], run: dict[str, Any]) -> dict[str, float]:
    """run - base for every metric both have."""
    out = {}
    for key, _, _ in METRICS:
        a, b = metric(base, key), metric(run, key)
        if a is not None and b is not None:
            out[key] = b - a
    return out


def forgetting(base: dict[str, Any], run: dict[str, Any], max_drop: float) -> dict[str, Any]:
    """Seed 002's acceptance rule on general knowledge: the run may lose at most `max_drop` accuracy against its
    base; the items the base got right and the run got wrong are listed."""
    b, r = base.get("general") or {}, run.get("general") or {}
    if b.get("accuracy") is None or r.get("accuracy") is None:
        return {"checked": False}
    drop = b["accuracy"] - r["accuracy"]
    lost = [i for i, (x, y) in enumerate(zip(b.get("correct_items") or [], r.get("correct_items") or [])) if x and not y]
    return {"checked": True, "source": r.get("source"), "base_accuracy": b["accuracy"], "accuracy": r["accuracy"],
            "drop": drop, "max_drop": max_drop, "flagged": drop > max_drop, "regressed_items": lost}


def evaluate_run(run: Run, options: Options) -> dict[str, Any]:
    """One run's record: seed 004's keys (training, test, samples), plus what was tested on and how."""
    model = run.data.get("model") or {}
    record: dict[str, Any] = {
        "model_name": run.name,
        "model_path": str(run.run_dir),
        "run_finished_at": run.data.get("finished_at"),  # which run of this directory was scored (report: stale)
        "method": run.method,
        "base_model": model.get("base"),
        "adapters": model.get("adapters") or [],
        **training_metrics(run.run_dir, run.data),
        **{key: None for key in TEST_KEYS},
        "generation_samples": [],
    }
    want_scores = bool(options.max_samples)
    if not (want_scores or options.generation_samples or options.general):
        return record
    from llf_recipes.eval import session  # heavy: torch, transformers, llamafactory

    record.update(session.score_run(run, options))
    return _clean(record)


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: a metric that could not be computed is null."""
    import math

    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}



"""The closing summary of `llf-recipes run`: each stage's status, duration and final metrics, where the model is, and
the commands to type next with the exact paths. Read from the stages' manifests, so it says what was recorded."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any

from llf_recipes import manifest
from llf_recipes.console import shown_path
from llf_recipes.progress import clock

# Final metrics worth a column, by preference; the first two found are shown.
METRICS = (("train_loss", "mean loss"), ("eval_loss", "eval loss"), ("eval_accuracy", "eval acc"),
           ("reward", "reward"), ("rewards/accuracies", "pref acc"),
           # what the stages of llf-recipes' own verbs (generate, score, judge, pairs) produced
           ("answers", "answers"), ("mean_score", "mean score"), ("pairs", "pairs"))


def _metrics(data: dict[str, Any]) -> str:
    labels = dict(METRICS)
    return ", ".join(f"{labels[key]} {value:.4g}" for key, value in manifest.figures(data, labels)[:2])


def stage_rows(run_dirs: list[tuple[str, Path]], since: float) -> list[dict[str, Any]]:
    """One row per stage: what its manifest says, and whether this invocation ran it or found it done."""
    rows = []
    for name, run_dir in run_dirs:
        data = manifest.read(run_dir) if manifest.path_for(run_dir).is_file() else None
        if data is None:
            rows.append({"stage": name, "status": "not run", "time": "", "metrics": "", "run_dir": run_dir, "data": None})
            continue
        status = str(data.get("status"))
        finished = _epoch(data.get("finished_at"))
        if status == "completed" and finished is not None and finished < since:
            status = "done before"  # skipped now: completed earlier with the same config and data
        elif status in ("running", "planned") or (finished is not None and finished < since):
            status = "not run"
        duration = data.get("duration_s")
        rows.append({"stage": name, "status": status, "time": clock(duration) if duration is not None else "",
                     "metrics": _metrics(data) if data.get("status") == "completed" else "",
                     "run_dir": run_dir, "data": data})
    return rows


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z"))
    except ValueError:
        return None


def render(recipe: str, rows: list[dict[str, Any]], elapsed: float, rerun: str, smoke: bool = False) -> list[str]:
    """The summary as lines of at most about 80 columns."""
    failed = next((r for r in rows if r["status"] in ("failed", "interrupted")), None)
    if failed:
        for r in rows[rows.index(failed) + 1:]:
            r.update(status="not reached", time="", metrics="")
    done = [r for r in rows if r["status"] in ("completed", "done before")]
    what = "smoke run" if smoke else "run"
    head = f"{recipe}: {len(done)} of {len(rows)} stage(s) completed in {clock(elapsed)}"
    lines = ["", f"{head} ({what})" if not failed else f"{head}; stage {failed['stage']} {failed['status']}"]
    width = max(len(r["stage"]) for r in rows)
    for r in rows:
        lines.append(f"  {r['stage']:<{width}}  {r['status']:<11}  {r['time']:>7}  {r['metrics']}".rstrip())
    if failed:
        log = (failed["data"] or {}).get("log")
        if log:
            lines.append(f"log: {shown_path(log)}")
        if failed["status"] == "interrupted":
            lines.append(f"next: `{rerun}` resumes it (from its latest checkpoint, if it saved one)")
        else:
            lines.append(f"next: fix what the log says, then `{rerun}` (completed stages are skipped)")
        return lines
    last = done[-1] if done and len(done) == len(rows) else None
    if last is None:
        return lines
    run_dir = shown_path(last["run_dir"])
    model = (last["data"] or {}).get("model") or {}
    root = shown_path(Path(last["run_dir"]).parent)
    if not model.get("base"):  # a stage that trains nothing (generate, score, pairs): its files are what it left
        lines.append(f"output: {run_dir}")
        return lines
    if model.get("adapters"):
        base = str(model.get("base") or "")
        lines.append(f"model: {run_dir} (LoRA adapter on {shown_path(base) if os.path.isabs(base) else base})")
    else:
        lines.append(f"model: {shown_path(model.get('base') or run_dir)}")
    lines.append("next:")
    if model.get("adapters"):
        lines.append(f"  llf-recipes export {run_dir}   # merge into a standalone model")
    lines.append(f"  llf-recipes ask {run_dir} {shlex.quote('Hello, who are you?')}")
    lines.append(f"  llf-recipes eval {root}")
    lines.append(f"  llf-recipes report {root}")
    return lines

"""`eval`: every run found through its manifest, scored on held-out rows, into seed 004's evaluation_results.json."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llf_recipes import manifest
from llf_recipes.atomic import write_text
from llf_recipes.errors import LlfError
from llf_recipes.eval.training import training_metrics

RESULTS = "evaluation_results.json"
TEST_KEYS = ("perplexity", "test_loss", "preference_accuracy", "preference_correct", "preference_total",
             "avg_chosen_loss", "avg_rejected_loss", "loss_margin")
MODEL_VERBS = ("train", "export", "merge")  # manifests that leave a model behind
INFERENCE_ONLY = ("model_name_or_path", "adapter_name_or_path", "finetuning_type", "trust_remote_code")


@dataclass
class Options:
    methods: list[str] = field(default_factory=list)
    max_samples: int = 100
    generation_samples: int = 3
    max_new_tokens: int = 64
    skip_perplexity: bool = False
    datasets: list[str] = field(default_factory=list)
    pref_datasets: list[str] = field(default_factory=list)
    data_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    progress: bool = True


@dataclass
class Run:
    name: str
    run_dir: Path
    data: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        """The config to test with: an exported or merged model keeps the data settings of the run it came from
        (dataset, split, cutoff_len, template), so it is tested on the same rows."""
        own = self.data.get("config") or {}
        source = (self.data.get("source") or {}).get("run_dir")
        upstream = manifest.read(source) if self.data.get("verb") != "train" and source else None
        if not upstream:
            return own
        inherited = {k: v for k, v in (upstream.get("config") or {}).items() if k not in INFERENCE_ONLY}
        return {**inherited, **{k: v for k, v in own.items() if k in INFERENCE_ONLY or k == "template"}}

    @property
    def method(self) -> str:
        return method_of(self.data)


def method_of(data: dict[str, Any]) -> str:
    """sft, dpo, orpo, simpo, kto, rm, pt, ppo (orpo/simpo are LLaMA-Factory's dpo stage with that pref_loss)."""
    config = data.get("config") or {}
    stage = config.get("stage") or (data.get("model") or {}).get("stage") or data.get("verb") or "?"
    if stage == "dpo" and config.get("pref_loss") in ("orpo", "simpo"):
        return config["pref_loss"]
    return str(stage)


def discover(paths: list[str | Path], methods: list[str] | None = None, *,
             completed: bool = True) -> tuple[list[Run], list[str]]:
    """Runs with a model under `paths`, named recipe/stage (only completed ones unless `completed` is False);
    and the ones skipped, with why."""
    found, skipped = [], []
    for run_dir, data in manifest.find(paths):
        if data.get("verb") not in MODEL_VERBS or not (data.get("model") or {}).get("base"):
            continue
        if completed and data.get("status") != "completed":
            skipped.append(f"{run_dir}: status {data.get('status')}, not evaluated")
            continue
        run = Run(run_name(run_dir, data), run_dir.resolve(), data)
        if methods and run.method not in methods and str(data.get("stage")) not in methods:
            continue
        found.append(run)
    names = [r.name for r in found]
    for run in found:  # the same recipe/stage under two output roots: fall back to the path
        if names.count(run.name) > 1:
            run.name = str(run.run_dir)
    return found, skipped


def run_name(run_dir: Path, data: dict[str, Any]) -> str:
    recipe = data.get("recipe")
    recipe_name = recipe.get("name") if isinstance(recipe, dict) else recipe
    return f"{recipe_name}/{data.get('stage')}" if recipe_name and data.get("stage") else run_dir.name


def default_output(paths: list[str | Path]) -> Path:
    """RUNS_DIR/evaluation_results.json for one directory, else ./evaluation_results.json."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return Path(paths[0]) / RESULTS
    return Path(RESULTS)


def read_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LlfError(f"not valid JSON: {exc.msg}", where=f"{path}:{exc.lineno}",
                       fix="delete it or pass -o for a new file") from None
    if not isinstance(data, dict):
        raise LlfError("not an evaluation results object", where=str(path), fix="delete it or pass -o for a new file")
    return data


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    """Merge into what the file holds: runs evaluated now replace their entries, others are kept."""
    merged = {**read_results(path), **results}
    return write_text(path, json.dumps(merged, indent=2, ensure_ascii=False, allow_nan=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    return str(value)


def evaluate(runs: list[Run], options: Options) -> dict[str, Any]:
    return {run.name: evaluate_run(run, options) for run in runs}


def evaluate_run(run: Run, options: Options) -> dict[str, Any]:
    """One run's record: seed 004's keys (training, test, samples), plus what was tested on and how."""
    model = run.data.get("model") or {}
    record: dict[str, Any] = {
        "model_name": run.name,
        "model_path": str(run.run_dir),
        "method": run.method,
        "base_model": model.get("base"),
        "adapters": model.get("adapters") or [],
        **training_metrics(run.run_dir, run.data),
        **{key: None for key in TEST_KEYS},
        "generation_samples": [],
    }
    want_scores = bool(options.max_samples)
    if not (want_scores or options.generation_samples):
        return record
    from llf_recipes.eval import session  # heavy: torch, transformers, llamafactory

    record.update(session.score_run(run, options))
    return _clean(record)


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: a metric that could not be computed is null."""
    import math

    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

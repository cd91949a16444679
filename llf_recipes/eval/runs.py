"""What `eval`, `bench` and `report` evaluate: runs found through their manifests, bare models, the base of a run,
and the results file they share (seed 004's evaluation_results.json). Reads files only: no torch."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llf_recipes import manifest
from llf_recipes.atomic import write_text
from llf_recipes.errors import LlfError

RESULTS = "evaluation_results.json"
OTHER_VERBS_KEYS = ("benchmarks", "judge")  # sections of a run's entry that other verbs than `eval` write
MODEL_VERBS = ("train", "export", "merge", "grpo")  # manifests that leave a model behind
INFERENCE_ONLY = ("model_name_or_path", "adapter_name_or_path", "finetuning_type", "trust_remote_code")
BASE_PREFIX = "base:"


@dataclass
class Options:
    methods: list[str] = field(default_factory=list)
    max_samples: int = 100
    generation_samples: int = 3
    max_new_tokens: int | None = None  # None: 64 for samples, the run's max_completion_length for GRPO
    skip_perplexity: bool = False
    datasets: list[str] = field(default_factory=list)
    pref_datasets: list[str] = field(default_factory=list)
    data_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    progress: bool = True  # the bar (on a terminal)
    summary_line: bool = True  # without the bar: one line per run when it is scored
    log: str | None = None  # where the engine's and its libraries' output goes (None: left as it is)
    baseline: bool = False
    general: str | None = None  # a multiple-choice file (or registered dataset) for the forgetting check
    max_drop: float = 0.05  # the forgetting check's allowed accuracy drop from base to run
    template: str | None = None  # for bare models


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
        upstream = manifest.read(source) if self.data.get("verb") not in ("train", "grpo") and source else None
        if not upstream:
            return own
        inherited = {k: v for k, v in (upstream.get("config") or {}).items() if k not in INFERENCE_ONLY}
        return {**inherited, **{k: v for k, v in own.items() if k in INFERENCE_ONLY or k == "template"}}

    @property
    def method(self) -> str:
        return method_of(self.data)

    @property
    def bare(self) -> bool:
        return self.data.get("verb") == "model"


def method_of(data: dict[str, Any]) -> str:
    """sft, dpo, orpo, simpo, kto, rm, pt, ppo, grpo (orpo/simpo are LLaMA-Factory's dpo stage with that pref_loss);
    base for a bare model."""
    if data.get("verb") == "model":
        return "base"
    config = data.get("config") or {}
    stage = config.get("stage") or (data.get("model") or {}).get("stage") or data.get("verb") or "?"
    if stage == "dpo" and config.get("pref_loss") in ("orpo", "simpo"):
        return config["pref_loss"]
    return str(stage)


def bare_run(model: str | Path, template: str | None = None, name: str | None = None,
             config: dict[str, Any] | None = None, cwd: str | None = None) -> Run:
    """A model without a manifest (a local directory or a hub id), evaluated like a run."""
    path = Path(model)
    base = str(path.resolve()) if path.exists() else str(model)
    data = {"verb": "model", "status": "completed", "config": dict(config or {}), "cwd": cwd,
            "model": {"base": base, "adapters": [], "template": template, "stage": None, "merged": True}}
    return Run(name or (path.name if path.exists() else str(model)), path.resolve() if path.exists() else path, data)


def base_of(run: Run) -> str | None:
    """The model the run started from: the stage's model_name_or_path (an export: the model it merged into)."""
    config = run.config
    return str(config.get("model_name_or_path") or (run.data.get("model") or {}).get("base") or "") or None


def base_run(run: Run) -> Run:
    """The run's base model, with the run's config, so it is tested on the same rows, prompts and settings."""
    base = base_of(run)
    if not base:
        raise LlfError(f"{run.name}: the manifest names no base model", fix="evaluate the base as a model: eval MODEL_DIR")
    config = {k: v for k, v in run.config.items() if k not in ("adapter_name_or_path", "export_dir")}
    model = run.data.get("model") or {}
    found = bare_run(base, model.get("template") or config.get("template"), f"{BASE_PREFIX}{run.name}", config,
                     run.data.get("cwd"))
    found.data["datasets"] = run.data.get("datasets") or {}  # a GRPO run's data file, for the same rows
    return found


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and not manifest.path_for(path).is_file()


def discover(paths: list[str | Path], methods: list[str] | None = None, *, completed: bool = True,
             template: str | None = None, manifests: list[tuple[Path, dict[str, Any]]] | None = None
             ) -> tuple[list[Run], list[str]]:
    """Runs with a model under `paths`, named recipe/stage (only completed ones unless `completed` is False), and
    bare models (a directory with config.json and no manifest, or a hub id); and the ones skipped, with why. Every
    manifest read on the way (any verb, any status) is added to `manifests` when given."""
    found, skipped = [], []
    for path in paths:
        if is_model_dir(Path(path)) or _hub_id(path):
            found.append(bare_run(path, template))
            continue
        for run_dir, data in manifest.find([path]):
            if manifests is not None:
                manifests.append((run_dir, data))
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


def _hub_id(path: str | Path) -> bool:
    """owner/name that is not a local path and that the hub cache holds: a downloaded hub model."""
    text = str(path)
    parts = text.split("/")
    if Path(text).exists() or len(parts) != 2 or not all(parts) or text.startswith((".", "~")):
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(text, "config.json"), str)


def run_name(run_dir: Path, data: dict[str, Any]) -> str:
    recipe = data.get("recipe")
    recipe_name = recipe.get("name") if isinstance(recipe, dict) else recipe
    return f"{recipe_name}/{data.get('stage')}" if recipe_name and data.get("stage") else run_dir.name


def default_output(paths: list[str | Path]) -> Path:
    """RUNS_DIR/evaluation_results.json for one directory of runs, else ./evaluation_results.json."""
    if len(paths) == 1 and Path(paths[0]).is_dir() and not is_model_dir(Path(paths[0])):
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


def write_results(path: str | Path, results: dict[str, Any], *, merge_keys: tuple[str, ...] = ()) -> Path:
    """Merge into what the file holds: runs evaluated now replace their entries, others are kept. Keys named in
    `merge_keys` (e.g. benchmarks) are merged one level deeper, so one verb's results keep the other's."""
    merged = read_results(path)
    for name, record in results.items():
        old = merged.get(name) if isinstance(merged.get(name), dict) else {}
        if merge_keys:
            record = {**old, **record, **{k: {**(old.get(k) or {}), **(record.get(k) or {})} for k in merge_keys}}
        elif isinstance(old, dict):  # `eval` keeps what `bench` and `judge` wrote
            record = {**record, **{k: old[k] for k in OTHER_VERBS_KEYS if old.get(k) and k not in record}}
        merged[name] = record
    return write_text(path, json.dumps(merged, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

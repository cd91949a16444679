"""`merge`: two or more models of one base combined by mergekit (soup, SLERP, TIES, DARE).

The arithmetic is mergekit's: this module resolves the inputs (a run's LoRA adapter is merged into its base first by
`export`), checks they share an architecture, writes mergekit's YAML configuration and runs `mergekit-yaml` on it.
The result gets a manifest, so `eval`, `report`, `ask` and `chat` take it like any run; it is tested on the held-out
rows of its first source run.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from llf_recipes import manifest, yamlio
from llf_recipes.atomic import write_text
from llf_recipes.errors import LlfError

# Our method names -> mergekit's. DARE alone rescales the kept deltas; combined with TIES' sign election it is
# dare_ties, the usual choice.
METHODS = {"soup": "linear", "slerp": "slerp", "ties": "ties", "dare": "dare_ties", "dare_linear": "dare_linear"}
NEEDS_BASE = ("ties", "dare", "dare_linear")
SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size")


@dataclass
class Source:
    """One input model: where its weights are, and what run (if any) it came from."""

    arg: str
    path: str  # a directory of weights, or a hub id
    run_dir: Path | None = None
    data: dict[str, Any] | None = None

    @property
    def base(self) -> str | None:
        """The model it was fine-tuned from: the run's model_name_or_path."""
        return ((self.data or {}).get("config") or {}).get("model_name_or_path")

    @property
    def template(self) -> str | None:
        return ((self.data or {}).get("model") or {}).get("template")


def resolve(arg: str, output_root: str = "saves", export: bool = True) -> Source:
    """A run directory or recipe name (its adapters exported into a standalone model), a model directory, or a hub id."""
    path = Path(arg)
    if manifest.path_for(path).is_file() or (not path.exists() and (Path(output_root) / arg).is_dir()):
        run_dir, data = manifest.resolve(arg, output_root)
        model = data.get("model") or {}
        if model.get("adapters"):
            if not export:
                return Source(arg, str(_export_dir(run_dir)), run_dir.resolve(), data)
            from llf_recipes.use import export as export_run

            # A LoRA run becomes a full model first: mergekit combines whole weights.
            return Source(arg, str(export_run(run_dir, data, None)), run_dir.resolve(), data)
        return Source(arg, str(model.get("base")), run_dir.resolve(), data)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LlfError(f"{arg} is neither a run (no llf-run.json) nor a model (no config.json)",
                           fix="pass a stage's output directory, a recipe name, or a Hugging Face model directory")
        return Source(arg, str(path.resolve()))
    if path.suffix or arg.count("/") != 1:
        raise LlfError(f"{arg} does not exist", fix="pass a run directory, a model directory or a hub id (org/name)")
    return Source(arg, arg)  # a hub id: mergekit reads it from the Hugging Face cache


def _export_dir(run_dir: Path) -> Path:
    from llf_recipes.use import default_export_dir

    return default_export_dir(run_dir).absolute()


def check_compatible(sources: list[Source], base: str | None) -> None:
    """The same architecture and shapes everywhere (mergekit's own error comes late and terse), and a warning when
    the runs start from different models: averaging unrelated weights gives noise."""
    bases = {s.base for s in sources if s.base}
    if len(bases) > 1:  # a warning: a full fine-tune of an earlier stage names that stage, not the first base
        listing = "; ".join(f"{s.arg}: {s.base}" for s in sources if s.base)
        print(f"warning: the runs start from different models ({listing}); merging makes sense only for models "
              "fine-tuned from one base", file=sys.stderr)
    shapes = {}
    for where in [s.path for s in sources] + ([base] if base else []):
        config = Path(where) / "config.json"
        if config.is_file():
            data = json.loads(config.read_text(encoding="utf-8"))
            shapes[where] = {k: data.get(k) for k in SHAPE_KEYS}
    if len({json.dumps(v, sort_keys=True) for v in shapes.values()}) > 1:
        first, *rest = shapes.items()
        diff = next(k for k in SHAPE_KEYS for _, v in rest if v.get(k) != first[1].get(k))
        raise LlfError(f"the models differ in {diff}: " + ", ".join(f"{p}={v.get(diff)}" for p, v in shapes.items()),
                       key=diff, fix="merge models of one architecture and size (fine-tuned from one base)")


def build_config(method: str, paths: list[str], *, weights: list[float] | None = None, t: float = 0.5,
                 density: float = 0.5, base: str | None = None, dtype: str | None = None,
                 normalize: bool | None = None) -> dict[str, Any]:
    """mergekit's YAML configuration for the method (see mergekit's docs/merge_methods.md)."""
    if method not in METHODS:
        raise LlfError(f"unknown merge method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    if len(paths) < 2:
        raise LlfError("merging needs two or more models", fix="pass two or more runs or model directories")
    if weights is not None and len(weights) != len(paths):
        raise LlfError(f"{len(weights)} weight(s) for {len(paths)} model(s)", key="--weights",
                       fix="give one weight per model, in order")
    config: dict[str, Any] = {"merge_method": METHODS[method]}
    if method == "soup":
        weights = weights or [1.0] * len(paths)
        if sum(weights) <= 0:
            raise LlfError("the weights must add up to more than 0", key="--weights")
        config["models"] = [{"model": p, "parameters": {"weight": w}} for p, w in zip(paths, weights)]
        config["parameters"] = {"normalize": True if normalize is None else normalize}
    elif method == "slerp":
        if len(paths) != 2:
            raise LlfError(f"SLERP interpolates between exactly two models ({len(paths)} given)",
                           fix="pass two models, or use --method soup/ties/dare for more")
        if not 0.0 <= t <= 1.0:
            raise LlfError(f"--t {t} is outside [0, 1]", key="--t", fix="0 keeps the first model, 1 the second")
        config["base_model"] = paths[0]  # t is measured from it: 0 = first model, 1 = second
        config["models"] = [{"model": p} for p in paths]
        config["parameters"] = {"t": t}
    else:
        if not base:
            raise LlfError(f"{method} merges task vectors (model - base) and needs the common base model",
                           key="--base", fix="pass --base MODEL (runs name theirs in their manifest)")
        if not 0.0 < density <= 1.0:
            raise LlfError(f"--density {density} is outside (0, 1]", key="--density",
                           fix="the share of each task vector kept, e.g. 0.5")
        weights = weights or [1.0] * len(paths)
        config["base_model"] = base
        config["models"] = [{"model": p, "parameters": {"weight": w, "density": density}} for p, w in zip(paths, weights)]
        if normalize is not None:
            config["parameters"] = {"normalize": normalize}
    if dtype:
        config["dtype"] = dtype
    return config


def default_dtype(path: str) -> str | None:
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text(encoding="utf-8"))
    value = data.get("dtype") or data.get("torch_dtype")
    return value if value in ("float32", "bfloat16", "float16") else None


def run_mergekit(config: dict[str, Any], out: Path, *, seed: int | None = None, device: str = "cpu",
                 force: bool = False) -> Path:
    """mergekit-yaml into a sibling directory renamed onto `out` when it succeeds: never a half-written model."""
    from llf_recipes.launchers.local import stream

    if find_spec("mergekit") is None:
        raise LlfError("merging needs mergekit", fix='pip install "llf-recipes[merge]"')
    out = out.absolute()
    if out.exists() and any(out.iterdir()):
        previous = manifest.read(out)
        if not force or (previous is None and not (out / "mergekit_config.yml").is_file()):
            raise LlfError(f"{out} exists and is not empty",
                           fix="pass another -o, or --force to replace a model written by merge")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    config_path = out.with_name(f".{out.name}.mergekit-{uuid.uuid4().hex[:8]}.yml")
    write_text(config_path, yamlio.dump(config))
    argv = [sys.executable, "-m", "mergekit.scripts.run_yaml", str(config_path), str(tmp), "--copy-tokenizer",
            "--no-write-model-card"]
    if seed is not None:
        argv += ["--random-seed", str(seed)]
    if device != "cpu":
        argv += ["--device", device]
    log = out.with_name(f"{out.name}.merge.log")  # beside the output while it runs; inside it once it succeeded
    log.unlink(missing_ok=True)
    from llf_recipes.console import shown_path, verbose

    command = f": {' '.join(argv)} " if verbose() else " "
    print(f"merge ({config['merge_method']}) -> {shown_path(out)}{command}(log: {shown_path(log)})", flush=True)
    try:
        code = stream(argv, {}, log)
        if code != 0:
            from llf_recipes.console import print_tail

            print_tail(log, "merge")
            raise LlfError(f"mergekit failed with exit code {code}", where=str(log),
                           fix="read the log; mismatched shapes or a missing base model are the usual causes")
        from llf_recipes.engines.handoff import make_portable

        make_portable(tmp)  # readable alike by the transformers 4 engines (PPO, EasyR1)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        shutil.move(str(log), out / "llf-merge.log")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        config_path.unlink(missing_ok=True)
    return out


def inputs(sources: list[Source]) -> list[dict[str, Any]]:
    """What a merge read, as it was: each model and when it was written (its manifest, else its config.json)."""
    out = []
    for s in sources:
        data = manifest.read(s.path) if manifest.path_for(s.path).is_file() else None
        config = Path(s.path) / "config.json"
        stamp = (data or {}).get("finished_at") or (config.stat().st_mtime_ns if config.is_file() else None)
        out.append({"model": s.path, "written": stamp})
    return out


def written_by_merge(out: Path) -> bool:
    data = manifest.read(out) if manifest.path_for(out).is_file() else None
    return bool(data and data.get("verb") == "merge")


def up_to_date(out: Path, config: dict[str, Any], sources: list[Source]) -> bool:
    """The merge in `out` completed with this configuration from these sources as they are now."""
    data = manifest.read(out) if manifest.path_for(out).is_file() else None
    return bool(data and data.get("verb") == "merge" and data.get("status") == "completed"
                and data.get("config_hash") == manifest.config_hash(config) and data.get("inputs") == inputs(sources))


def write_manifest(out: Path, method: str, config: dict[str, Any], sources: list[Source], started: float) -> Path:
    """A manifest like a run's, so the merged model is found by eval/report and used by ask/chat/serve."""
    first_run = next((s for s in sources if s.run_dir), None)
    template = next((s.template for s in sources if s.template), None)
    record = {
        "recipe": None,
        "stage": f"merge-{method}",
        "verb": "merge",
        "stage_index": 0,
        "output_dir": str(out),
        "config": {"model_name_or_path": str(out), "template": template, "merge": config},
        "config_hash": manifest.config_hash(config),
        "source": {"run_dir": str(first_run.run_dir)} if first_run else None,
        "sources": [{"arg": s.arg, "model": s.path, "run_dir": str(s.run_dir) if s.run_dir else None} for s in sources],
        "inputs": inputs(sources),
        "versions": {**manifest.versions(), **_mergekit_version()},
        "model": {"base": str(out), "adapters": [], "template": template, "finetuning_type": "full",
                  "stage": "merge", "merged": True},
        "status": "completed",
        "exit_code": 0,
        "finished_at": manifest.now(),
        "duration_s": round(time.time() - started, 3),
    }
    return manifest.write(out, record)


def _mergekit_version() -> dict[str, str | None]:
    from importlib import metadata

    try:
        return {"mergekit": metadata.version("mergekit")}
    except metadata.PackageNotFoundError:
        return {"mergekit": None}

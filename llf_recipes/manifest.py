"""The run manifest: `llf-run.json` in every stage's output directory.

It records what ran (recipe and its hash, the rendered config, argv and environment per node, the layout), with what
(versions, hashes of the dataset files), and how it ended (start, end, status, exit code, final metrics). Later stages,
`export`, `ask`, `chat`, `eval` and `report` read it, so nobody copies an adapter path by hand.

Schema (version 1):
    schema, llf_recipes            format and writer version
    recipe: {name, path, hash}     the recipe file and the sha256 of its text
    stage, verb, stage_index       which stage of the recipe this directory holds
    output_dir, config_path, log   where the outputs, the YAML that ran and the log are
    config, config_hash            the rendered LLaMA-Factory config, and the sha256 of its canonical JSON
    layout: {source, describe, device, nnodes, world_size, hosts}
    nodes: [{node_rank, host, argv, env}]
    versions: {llf-recipes, llamafactory, torch, transformers, peft, trl, ...}
    datasets: {name: {file, sha256, bytes}}
    model: {base, adapters, template, finetuning_type, stage, merged}
    status                         planned | running | completed | failed | interrupted
                                   (read back as `abandoned` when it says running and its owner no longer runs)
    owner: {pid, start, host}      while running: the `llf-recipes run` process that holds the stage
    rerun                          the `llf-recipes run ...` command line that ran it (what to type to run it again)
    identity, lineage              the digest of the fingerprint and the lineage its checkpoints carry (llf_recipes/checkpoints.py)
    exit_code, started_at, finished_at, duration_s
    metrics                        final metrics (all_results.json, else the last trainer_state entries)
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from llf_recipes import __version__
from llf_recipes.atomic import write_text
from llf_recipes.errors import LlfError
from llf_recipes.ownership import owner_gone

MANIFEST = "llf-run.json"
SCHEMA = 1
STATUSES = ("planned", "running", "completed", "failed", "interrupted", "abandoned")
TRACKED_PACKAGES = ("llamafactory", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "deepspeed")


def path_for(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir if run_dir.name == MANIFEST else run_dir / MANIFEST


def read(run_dir: str | Path) -> dict[str, Any] | None:
    """The manifest in `run_dir` (or at that path), None when there is none; a broken one is an error."""
    path = path_for(run_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LlfError(f"the run manifest is not valid JSON: {exc.msg}", where=f"{path}:{exc.lineno}",
                       fix="delete it to treat the directory as never run") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise LlfError(f"the run manifest has an unknown layout (schema {data.get('schema') if isinstance(data, dict) else '?'})",
                       where=str(path), fix="delete it to treat the directory as never run")
    if data.get("status") == "running" and owner_gone(data.get("owner")):
        data["status"] = "abandoned"  # its `run` was killed: nothing will ever finish this record
    return data


def write(run_dir: str | Path, data: dict[str, Any]) -> Path:
    data = {"schema": SCHEMA, "llf_recipes": __version__, **data}
    return write_text(path_for(run_dir), json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def update(run_dir: str | Path, **changes: Any) -> dict[str, Any]:
    data = read(run_dir) or {}
    data.update(changes)
    write(run_dir, data)
    return data


def find(paths: Iterable[str | Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every run under `paths` (a run directory, or a directory holding runs at any depth), in path order."""
    seen: set[Path] = set()
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise LlfError(f"{root} does not exist", fix="pass a run directory or a directory of runs (e.g. saves/)")
        candidates = [path_for(root)] if path_for(root).is_file() else sorted(root.rglob(MANIFEST))
        for path in candidates:
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            data = read(path)
            if data is not None:
                yield path.parent, data


def config_hash(config: dict[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (nothing is imported)."""
    found: dict[str, str | None] = {"llf-recipes": __version__}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def model_of(config: dict[str, Any], output_dir: str | Path | None) -> dict[str, Any]:
    """What a trained stage leaves behind, as `export`/`ask`/`eval` need it: the base model and the adapter chain."""
    adapters = _as_list(config.get("adapter_name_or_path"))
    finetuning = config.get("finetuning_type", "lora")
    trained = bool(config.get("do_train")) and output_dir is not None
    base = config.get("model_name_or_path")
    merged = False
    if trained and finetuning == "lora":
        if config.get("create_new_adapter") or not adapters:
            adapters = [*adapters, str(output_dir)]
        else:
            adapters = [*adapters[:-1], str(output_dir)]  # training resumed the last adapter and saved it here
    elif trained:  # full or freeze tuning: the output directory is a complete model
        base, adapters, merged = str(output_dir), [], True
    if config.get("export_dir"):
        base, adapters, merged = str(config["export_dir"]), [], True
    return {
        "base": _absolute(base),
        "adapters": [_absolute(a) for a in adapters],
        "template": config.get("template"),
        "finetuning_type": finetuning,
        "stage": config.get("stage"),
        "merged": merged,
    }


def _absolute(path: Any) -> Any:
    """Local paths are recorded absolute, so the manifest reads the same from any directory; hub ids stay as they are."""
    if isinstance(path, str) and path and Path(path).exists():
        return str(Path(path).resolve())
    return path


def _as_list(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def final_metrics(output_dir: str | Path) -> dict[str, Any]:
    """all_results.json when the trainer wrote it, else the last logged values in trainer_state.json; train_loss is
    the mean over every logged step (`mean_logged_loss`)."""
    output_dir = Path(output_dir)
    state = trainer_state(output_dir)
    metrics: dict[str, Any] = {}
    results = output_dir / "all_results.json"
    try:
        loaded = json.loads(results.read_text(encoding="utf-8")) if results.is_file() else None
    except (OSError, json.JSONDecodeError):
        loaded = None
    if isinstance(loaded, dict):
        metrics = loaded
    else:
        for entry in (state or {}).get("log_history", []):
            metrics.update({k: v for k, v in entry.items() if isinstance(v, (int, float))})
    mean = mean_logged_loss(state)
    if "train_loss" in metrics and mean is not None:
        metrics["train_loss"] = mean
    return metrics


def mean_logged_loss(state: dict[str, Any] | None) -> float | None:
    """The training loss averaged over every step, from trainer_state.json's log: each logged loss is the mean over the
    steps since the previous one, so it is weighted by them. After a resume the Trainer's own train_loss sums only the
    last attempt's steps but divides by all of them; the log holds every step of the run (the checkpoint's history
    continued), so this is right either way."""
    total, last = 0.0, 0
    for entry in (state or {}).get("log_history", []) if isinstance(state, dict) else []:
        loss, step = entry.get("loss"), entry.get("step")
        if isinstance(loss, (int, float)) and isinstance(step, int) and step > last:
            total += loss * (step - last)
            last = step
    return total / last if last else None


def figures(data: dict[str, Any], keys: Iterable[str]) -> list[tuple[str, int | float]]:
    """(key, value) for those of `keys` whose final metric in the manifest `data` is a number, in the order of `keys`
    (what a summary or a report shows of a stage)."""
    metrics = data.get("metrics") or {}
    return [(k, metrics[k]) for k in keys
            if isinstance(metrics.get(k), (int, float)) and not isinstance(metrics.get(k), bool)]


def trainer_state(output_dir: str | Path) -> dict[str, Any] | None:
    """The trainer_state.json of the run, or of its latest checkpoint when the run did not finish."""
    output_dir = Path(output_dir)
    candidates = [output_dir / "trainer_state.json"]
    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is not None:
        candidates.append(checkpoint / "trainer_state.json")
    for path in candidates:
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                continue
    return None


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The `checkpoint-N` directory with the highest N that holds a trainer state (a complete save)."""
    best: tuple[int, Path] | None = None
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    for child in output_dir.iterdir():
        name = child.name
        if child.is_dir() and name.startswith("checkpoint-") and name[11:].isascii() and name[11:].isdigit() and (child / "trainer_state.json").is_file():
            step = int(name[11:])
            if best is None or step > best[0]:
                best = (step, child)
    return best[1] if best else None


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def resolve(target: str | Path, output_root: str | Path = "saves", completed: bool = True) -> tuple[Path, dict[str, Any]]:
    """A run directory, or a recipe name (its last completed stage under `output_root`), with its manifest."""
    path = Path(target)
    runs: list[tuple[Path, dict[str, Any]]] = []
    smoke: list[Path] = []
    if path.exists():
        runs = list(find([path]))
    elif (Path(output_root) / str(target)).is_dir():
        runs = list(find([Path(output_root) / str(target)]))
    elif _looks_like_path(str(target)):
        raise LlfError(f"{target} does not exist",
                       fix=f"pass a stage's output directory (it holds {MANIFEST}) or a recipe name run under "
                           f"{output_root}/")
    else:
        runs = _runs_of_recipe(str(target), Path(output_root))
        smoke = [d for d, m in runs if (m.get("layout") or {}).get("source") == "smoke"]
        runs = [r for r in runs if r[0] not in smoke]
    if completed:
        done = [(d, m) for d, m in runs if m.get("status") == "completed"]
        if runs and not done:
            run_dir, data = max(runs, key=lambda r: (r[1].get("finished_at") or r[1].get("started_at") or ""))
            status = data.get("status")
            code = f" (exit code {data['exit_code']})" if data.get("exit_code") not in (None, 0) else ""
            again = rerun_command(run_dir, data)
            log = _log_of(data)
            if status in ("interrupted", "abandoned"):
                fix = f"{again or 'run it again, which'} resumes it (from its latest checkpoint, if it saved one; " \
                      "completed stages are skipped)"
            else:
                fix = f"see its log, fix what it says, then {again or 'run it again'} (completed stages are " \
                      "skipped)"
            raise LlfError(f"the run in {run_dir} {status}{code}: it has no model to use", where=log, fix=fix)
        runs = done
    if not runs:
        elsewhere = _found_elsewhere(str(target), Path(output_root))
        if elsewhere:
            hint = f"it was run under another output root: add --output-root {elsewhere[0]}"
        elif smoke:
            hint = f"only a smoke run of it was found, in {smoke[-1]}: pass that directory to use its (random) model"
        else:
            hint = f"pass a stage's output directory (it holds {MANIFEST}) or a recipe name run under {output_root}/"
        raise LlfError(f"no {'completed ' if completed else ''}run found for {str(target)!r}", fix=hint)
    if len(runs) == 1:
        return runs[0]
    # A recipe directory: the last stage of the pipeline that completed and left a model (not generate or pairs).
    runs = [r for r in runs if (r[1].get("model") or {}).get("base")] or runs
    return max(runs, key=lambda r: (r[1].get("stage_index", -1), r[1].get("finished_at") or ""))


def rerun_command(run_dir: Path, data: dict[str, Any]) -> str | None:
    """The `llf-recipes run ...` that ran this stage, with its options (--smoke, --output-root, --set): as `run`
    recorded it, else rebuilt from the manifest (without --set values, which it does not keep)."""
    if isinstance(data.get("rerun"), str) and data["rerun"]:
        return f"`{data['rerun']}`"
    recipe = (data.get("recipe") or {}).get("name")
    if not recipe:
        return None
    argv = ["run", str(recipe)]
    smoke = (data.get("layout") or {}).get("source") == "smoke"
    if smoke:
        argv.append("--smoke")
    root = Path(run_dir).resolve().parent.parent
    if Path(run_dir).resolve().parent.name == recipe and root != (Path.cwd() / ("saves/smoke" if smoke else "saves")).resolve():
        argv += ["--output-root", _shown(root)]
    return "`llf-recipes " + shlex.join(argv) + "`"


def _log_of(data: dict[str, Any]) -> str | None:
    """The stage's log as the user would type it from here (the manifest names it relative to where `run` ran)."""
    log = data.get("log")
    if not isinstance(log, str) or not log:
        return None
    path = Path(log) if os.path.isabs(log) else Path(str(data.get("cwd") or ".")) / log
    return _shown(path)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _looks_like_path(target: str) -> bool:
    return not target or "/" in target or os.sep in target or target.startswith((".", "~"))


def _runs_of_recipe(name: str, output_root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The runs under `output_root` of recipe `name` that a stage's own output_dir put outside the usual
    ROOT/NAME/STAGE layout (those inside it belong to their root: see _found_elsewhere)."""
    if not output_root.is_dir():
        return []
    return [(d, m) for d, m in find([output_root])
            if (m.get("recipe") or {}).get("name") == name and d.parent.name != name]


def _found_elsewhere(name: str, output_root: Path, depth: int = 3) -> list[str]:
    """Output roots other than `output_root` (looked for under it and under ./saves) that hold runs of recipe `name`."""
    if "/" in name or not name:
        return []
    found: list[str] = []
    for top in dict.fromkeys([output_root, Path("saves")]):
        if not top.is_dir():
            continue
        level = [top]
        for _ in range(depth):
            level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
            for d in level:
                if d.name == name and d.parent != output_root and any(d.rglob(MANIFEST)):
                    found.append(str(d.parent))
    return list(dict.fromkeys(found))

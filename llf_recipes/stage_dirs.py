"""Where rendered stages write: a usable output root, one directory per stage, and a confined root for smoke runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError

OUTPUT_KEYS = ("output_dir", "export_dir")


def check_output_root(value: Any, where: str) -> None:
    """An empty output root would put every stage under the file-system root (`/RECIPE/STAGE`)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise LlfError("output_root is empty: every stage would write under the file-system root (/RECIPE/STAGE)",
                       key="output_root", where=where,
                       fix="give a directory, e.g. --set output_root=saves or --output-root /data/saves (or leave "
                           "it out for saves/)")
    if not isinstance(value, str):
        raise LlfError(f"output_root must be a directory path, not {value!r}", key="output_root", where=where,
                       fix="e.g. --set output_root=saves")


def norm_path(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(str(path)))


def is_under(path: str | Path, root: str | Path) -> bool:
    path, root = norm_path(path), norm_path(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def confine(config: dict[str, Any], root: str, recipe: str, stage: str) -> tuple[str, str] | None:
    """Move a stage's output directory under `root` (ROOT/RECIPE/STAGE) when it is set elsewhere, so that a smoke
    run never writes into (or stands in for) a real run's directory. Returns (its own directory, the new one)."""
    moved = None
    for key in OUTPUT_KEYS:
        value = config.get(key)
        if isinstance(value, str) and value and not is_under(value, root):
            target = f"{root.rstrip('/')}/{recipe}/{stage}"
            config[key] = target
            moved = moved or (value, target)
    return moved


# LLaMA-Factory's arguments that hold a path a stage reads, and those it writes (besides OUTPUT_KEYS).
READ_KEYS = ("model_name_or_path", "adapter_name_or_path", "adapter_folder", "ref_model", "ref_model_adapters",
             "reward_model", "reward_model_adapters", "dataset_dir", "media_dir", "cache_dir", "task_dir",
             "resume_from_checkpoint", "deepspeed", "kt_weight_path", "kt_expert_checkpoint_path")
WRITE_KEYS = ("logging_dir", "tokenized_path", "save_dir", "offload_folder", "profiler_output_dir", "swanlab_logdir")
LIST_KEYS = ("adapter_name_or_path",)  # comma-separated lists of paths


def _moved_path(value: str, targets: dict[str, str]) -> str:
    for old, new in targets.items():  # the directory itself, or a file in it
        if is_under(value, old):
            rest = os.path.relpath(norm_path(value), old)
            return new if rest == "." else f"{new}/{rest}"
    return value


def follow_moves(config: dict[str, Any], moved: dict[str, tuple[str, str]], keys: tuple[str, ...] | None = None) -> None:
    """Path arguments that name a moved output directory (or a file in it) name the new one instead: a later stage's
    reference to an earlier stage's directory written literally (not by stage_output), or a stage's own logging or
    cache directory inside its moved output directory. `moved`: stage -> (its own directory, the new one), as
    `confine` returns them; `keys`: the arguments to rewrite (every path argument by default). Other values (a
    `stage: sft` beside an `output_dir: sft`) are never paths and stay as they are."""
    targets = {norm_path(old): new for old, new in moved.values()}
    for key in keys if keys is not None else READ_KEYS + WRITE_KEYS:
        value = config.get(key)
        if not isinstance(value, str) or not value.strip():
            continue
        if key in LIST_KEYS:
            config[key] = ",".join(_moved_path(part.strip(), targets) if part.strip() else part
                                   for part in value.split(","))
        else:
            config[key] = _moved_path(value, targets)


def check_distinct(rendered: list, where: str) -> None:
    """Two stages writing one directory overwrite each other's model, config and manifest (and a stage that reads an
    earlier one's adapter from there reads its own output)."""
    seen: dict[str, str] = {}
    for r in rendered:
        directory = norm_path(r.run_dir)
        if directory in seen:
            first, second = seen[directory], r.stage.name
            raise LlfError(
                f"stages {first!r} and {second!r} both write to {r.run_dir}",
                key="output_dir", where=where,
                fix=f"give each stage its own directory: --set {second}.output_dir=DIR sets one stage's, "
                    "--set output_root=DIR moves them all (each to OUTPUT_ROOT/RECIPE/STAGE)")
        seen[directory] = r.stage.name

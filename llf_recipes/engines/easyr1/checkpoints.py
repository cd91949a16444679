"""An EasyR1 run's checkpoints: the latest or best step, its LoRA adapter copied beside the run, or its FSDP shards
merged by EasyR1's own script; `export --checkpoint` points a finished run at another step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from llf_recipes.engines.easyr1 import easyr1_dir, easyr1_python
from llf_recipes.errors import LlfError


def checkpoint_step(checkpoints: Path, which: str = "latest") -> Path:
    """`global_step_N/actor` of the latest or best checkpoint, from EasyR1's checkpoint_tracker.json."""
    tracker = checkpoints / "checkpoint_tracker.json"
    if not tracker.is_file():
        raise LlfError(f"{tracker} does not exist: the EasyR1 run saved no checkpoint",
                       fix="check the run's log; EasyR1 saves at trainer.save_freq and at the end of training")
    try:
        info = json.loads(tracker.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LlfError(f"invalid JSON: {exc.msg}", where=str(tracker)) from None
    field = {"latest": "last_global_step", "best": "best_global_step"}.get(which)
    if field is None:
        raise LlfError(f"checkpoint {which!r} is unknown", fix="use latest or best")
    step = info.get(field)
    if not isinstance(step, int) or step < 1:
        raise LlfError(f"{tracker} has no {field} (validation scores pick the best step)", key=field,
                       fix="export the latest checkpoint, or train with trainer.val_freq > 0")
    actor = checkpoints / f"global_step_{step}" / "actor"
    if not actor.is_dir():
        raise LlfError(f"{actor} does not exist (removed by save_limit?)", fix="export another checkpoint")
    return actor


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def collect_adapter(actor: Path, dest: Path) -> list[Path]:
    """Copy a checkpoint's PEFT adapter (actor/lora_adapter) and tokenizer (actor/huggingface) into `dest`, which
    LLaMA-Factory then loads with adapter_name_or_path, like a TRL or LLaMA-Factory LoRA run."""
    from llf_recipes.atomic import open_atomic

    adapter = actor / "lora_adapter"
    missing = [name for name in ADAPTER_FILES if not (adapter / name).is_file()]
    if missing:
        raise LlfError(f"{adapter} has no {', '.join(missing)}: not a LoRA checkpoint",
                       fix="for full-parameter runs, merge with EasyR1's scripts/model_merger.py")
    sources = [adapter / name for name in ADAPTER_FILES]
    hf = actor / "huggingface"
    if hf.is_dir():
        sources += [p for p in sorted(hf.iterdir()) if p.is_file() and (p.name.startswith(("tokenizer", "special_tokens",
                    "vocab", "merges", "chat_template", "added_tokens")))]
    copied = []
    for src in sources:
        with open(src, "rb") as fh, open_atomic(dest / src.name) as out:
            shutil.copyfileobj(fh, out)
        copied.append(dest / src.name)
    return copied


def merge_full(actor: Path, python: str, checkout: str | None) -> Path:
    """Full-parameter checkpoints are FSDP shards: EasyR1's own merger (in its environment) writes actor/huggingface."""
    import subprocess

    hf = actor / "huggingface"
    if any(hf.glob("*.safetensors")):
        return hf
    script = Path(checkout or "") / "scripts" / "model_merger.py"
    if not checkout or not script.is_file():
        raise LlfError(f"{actor} holds FSDP shards; merging them needs EasyR1's scripts/model_merger.py",
                       key="easyr1_dir", fix=f"set easyr1_dir (or $LLF_EASYR1_DIR) to your EasyR1 checkout, or run "
                       f"`python3 scripts/model_merger.py --local_dir {actor}` there")
    code = subprocess.call([python, str(script), "--local_dir", str(actor)])
    if code != 0:
        raise LlfError(f"EasyR1's model_merger.py failed with exit code {code}", where=str(actor))
    return hf


def result_model(run_dir: Path, settings: dict[str, Any], base_model: str, which: str = "latest",
                 strict: bool = True) -> dict[str, Any]:
    """The model an EasyR1 run leaves, in the manifest's form, from its latest or best checkpoint: a LoRA run's
    adapter is copied into the run directory (base + [run_dir]); a full run is merged by EasyR1's own script."""
    actor = checkpoint_step(run_dir / "checkpoints", which)
    lora = settings.get("finetuning_type", "lora") == "lora"
    model = {"base": base_model, "adapters": [str(run_dir)] if lora else [], "template": settings.get("template"),
             "finetuning_type": settings.get("finetuning_type", "lora"), "stage": "grpo", "merged": not lora,
             "backend": "easyr1", "checkpoint": str(actor)}
    if lora:
        collect_adapter(actor, run_dir)
    elif strict or easyr1_dir(settings) or any((actor / "huggingface").glob("*.safetensors")):
        model["base"] = str(merge_full(actor, easyr1_python(settings), easyr1_dir(settings)))
    else:
        # Training succeeded: the run is complete, its weights are FSDP shards until EasyR1's merger runs.
        model.update(base=None, merged=False, needs_merge=str(actor))
        print(f"note: {actor} holds FSDP shards; to use the model, merge them: set easyr1_dir (or $LLF_EASYR1_DIR) "
              f"to your EasyR1 checkout and run `llf-recipes export {run_dir} --checkpoint {which}`", flush=True)
    return model


def select_checkpoint(run_dir: Path, data: dict[str, Any], which: str) -> dict[str, Any]:
    """`export --checkpoint latest|best` of an EasyR1 run: point the run's manifest at that checkpoint."""
    from llf_recipes import manifest
    from llf_recipes.grpo.settings import resolved

    model = data.get("model") or {}
    if model.get("backend") != "easyr1":
        raise LlfError(f"the run in {run_dir} is not an EasyR1 run; --checkpoint picks among EasyR1 checkpoints",
                       key="--checkpoint", fix="leave --checkpoint out")
    base = model["base"] if model.get("adapters") else resolved(data.get("config") or {}).get("model_name_or_path")
    chosen = result_model(run_dir.resolve(), resolved(data.get("config") or {}), str(base), which)
    manifest.update(run_dir, model=chosen)
    return {**data, "model": chosen}

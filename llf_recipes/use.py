"""Using a finished run: merge it into a standalone model, chat with it, serve it, ask it one question.

Everything is read from the run's manifest (base model, adapter chain, template), so no path is copied by hand.
Inference configs hold only the keys LLaMA-Factory's export/chat/api accept: no training key, no quantization.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from llf_recipes import manifest, yamlio
from llf_recipes.atomic import write_text
from llf_recipes.errors import LlfError
from llf_recipes.schema.startup import vllm_adapters


def unmerged(run_dir: Path, model: dict[str, Any]) -> None:
    """A full-parameter EasyR1 run whose FSDP shards are not merged yet is no model to load."""
    if model.get("needs_merge"):
        raise LlfError(f"the run in {run_dir} left a full-parameter checkpoint as FSDP shards ({model['needs_merge']})",
                       fix=f"set easyr1_dir (or $LLF_EASYR1_DIR) to your EasyR1 checkout and run "
                           f"`llf-recipes export {run_dir} --checkpoint latest`")


def infer_config(run_dir: Path, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    model = data.get("model") or {}
    unmerged(run_dir, model)
    if not model.get("base"):
        raise LlfError(f"the run in {run_dir} does not name its base model", where=str(manifest.path_for(run_dir)),
                       fix="rerun the stage with llf-recipes run to rewrite its manifest")
    for path in model.get("adapters") or []:
        if not Path(path).is_dir():
            raise LlfError(f"the adapter {path} of the run in {run_dir} is missing", where=str(manifest.path_for(run_dir)),
                           fix="rerun the stage (llf-recipes run ... --force --stage STAGE)")
    stacked = vllm_adapters(model.get("adapters") or []) if extra.get("infer_backend") == "vllm" else None
    if stacked:
        raise LlfError(f"the run in {run_dir}: {stacked}", key="--backend",
                       fix=f"merge them first (llf-recipes export {run_dir}) and use the merged model")
    config: dict[str, Any] = {"model_name_or_path": model["base"]}
    if model.get("adapters"):
        config["adapter_name_or_path"] = ",".join(model["adapters"])
        config["finetuning_type"] = "lora"
    if model.get("template"):
        config["template"] = model["template"]
    from llf_recipes.eval.grpo_accuracy import training_system_prompt

    system = training_system_prompt(data)
    if system:  # a GRPO run answers in its trained format only when prompted as in training
        config["default_system"] = system
    config["trust_remote_code"] = True
    config.update({k: v for k, v in extra.items() if v is not None})
    return config


def write_config(path: Path, config: dict[str, Any], title: str) -> Path:
    write_text(path, f"# {title} (written by llf-recipes from the run manifest)\n" + yamlio.dump(config))
    return path


def inference_yaml(run_dir: Path, data: dict[str, Any], verb: str, sampling: dict[str, Any],
                   backend: str = "huggingface") -> Path:
    """`<run_dir>/llf-<verb>.yaml` for `llamafactory-cli chat|api` on the run's model, with its generating arguments
    and LLaMA-Factory's infer_backend (huggingface or vllm)."""
    config = infer_config(run_dir, data, infer_backend=backend, **sampling)
    return write_config(run_dir / f"llf-{verb}.yaml", config, f"{verb} with {run_dir}")


def default_export_dir(run_dir: Path) -> Path:
    return run_dir.parent / f"{run_dir.name}-merged"


def exported_from(run_dir: Path, data: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """For a directory `export` wrote: the run it was exported from (with that run's manifest), when it still exists."""
    source = (data.get("source") or {}).get("run_dir")
    if data.get("verb") != "export" or not source:
        return None
    found = manifest.read(source) if Path(source).is_dir() else None
    return (Path(source), found) if found and found.get("status") == "completed" else None


def export(run_dir: Path, data: dict[str, Any], export_dir: Path | None, *, export_size: int = 5,
           export_device: str = "cpu", force: bool = False) -> Path:
    """`llamafactory-cli export` the run's adapter chain merged into its base; the result gets a manifest of its own."""
    from llf_recipes.launchers.local import stream

    model = data.get("model") or {}
    unmerged(run_dir, model)
    if not model.get("adapters"):
        raise LlfError(f"the run in {run_dir} is already a standalone model ({model.get('base')})",
                       fix="use it directly with ask/chat/serve; export merges LoRA adapters only")
    export_dir = (export_dir or default_export_dir(run_dir)).absolute()
    previous = manifest.read(export_dir) if export_dir.is_dir() else None
    source_key = {"run_dir": str(run_dir.resolve()), "finished_at": data.get("finished_at"),
                  "config_hash": data.get("config_hash")}
    if previous and previous.get("status") == "completed" and previous.get("source") == source_key and not force:
        from llf_recipes.console import shown_path

        print(f"already exported from {shown_path(run_dir)} (--force exports again)")
        return export_dir
    if export_dir.exists() and any(export_dir.iterdir()) and previous is None and not force:
        raise LlfError(f"{export_dir} exists and was not written by llf-recipes export", fix="pass -o DIR or --force")
    config = infer_config(run_dir, data, export_dir=str(export_dir), export_size=export_size,
                          export_device=export_device, export_legacy_format=False)
    export_dir.mkdir(parents=True, exist_ok=True)
    yaml_path = write_config(export_dir / "llf-export.yaml", config, f"export of {run_dir}")
    log = export_dir / "llf-export.log"
    record = {
        "recipe": data.get("recipe"),
        "stage": f"{data.get('stage')}-merged",
        "verb": "export",
        "stage_index": data.get("stage_index", 0),
        "output_dir": str(export_dir),
        "config_path": str(yaml_path),
        "log": str(log),
        "config": config,
        "config_hash": manifest.config_hash(config),
        "source": source_key,
        "versions": manifest.versions(),
        "model": {"base": str(export_dir), "adapters": [], "template": model.get("template"),
                  "finetuning_type": model.get("finetuning_type"), "stage": model.get("stage"), "merged": True},
    }
    started, started_at = time.time(), manifest.now()
    manifest.write(export_dir, {**record, "status": "running", "started_at": started_at})
    argv = ["llamafactory-cli", "export", str(yaml_path)]
    from llf_recipes.console import shown_path, verbose

    command = f": {' '.join(argv)} " if verbose() else " "
    print(f"export {shown_path(run_dir)} -> {shown_path(export_dir)}{command}(log: {shown_path(log)})", flush=True)
    code = 130
    try:
        code = stream(argv, {}, log)
        if code == 0:  # readable alike by the transformers 4 engines (PPO, EasyR1)
            from llf_recipes.engines.handoff import make_portable

            make_portable(export_dir)
    finally:
        status = {0: "completed", 130: "interrupted"}.get(code, "failed")
        manifest.write(export_dir, {**record, "status": status, "exit_code": code, "started_at": started_at,
                                    "finished_at": manifest.now(), "duration_s": round(time.time() - started, 3)})
    if code == 130:  # Ctrl-C reached the engine too: the export is interrupted, not failed
        raise KeyboardInterrupt
    if code != 0:
        from llf_recipes.console import print_tail

        print_tail(log, "export")
        raise LlfError(f"llamafactory-cli export failed with exit code {code}", where=str(log))
    return export_dir


def ask(run_dir: Path, data: dict[str, Any], prompt: str, *, system: str | None = None,
        sampling: dict[str, Any] | None = None, backend: str = "huggingface") -> str:
    """One answer from the run's model through LLaMA-Factory's own ChatModel (the same template and generation code),
    on its Hugging Face or vLLM engine."""
    sampling = sampling or {"max_new_tokens": 256, "temperature": 0}
    config = infer_config(run_dir, data, infer_backend=backend, **sampling)
    from llf_recipes.console import engine_failure, output_to

    # LLaMA-Factory and transformers log to stdout and stderr: all of it goes to the log; stdout is the answer alone.
    log = run_dir / "llf-ask.log"
    try:
        with output_to(log), contextlib.redirect_stdout(sys.stderr):
            from llf_recipes.engines.lf_templates import chat_model

            model = chat_model(config)
            responses = model.chat([{"role": "user", "content": prompt}], system=system)
    except (KeyboardInterrupt, LlfError):
        raise
    except Exception as exc:  # noqa: BLE001 - the engine's failure, reported with its log
        raise engine_failure(log, f"the model of {run_dir} did not answer", exc, "ask") from None
    return responses[0].response_text if responses else ""

"""GRPO stage settings -> TRL's GRPOConfig and LoRA arguments (no torch here: `run --dry-run` prints them)."""

from __future__ import annotations

from typing import Any

from llf_recipes.grpo.settings import GrpoBatch


def grpo_config_kwargs(settings: dict[str, Any], batch: GrpoBatch) -> dict[str, Any]:
    """GRPOConfig fields. TRL counts completions per device, so the prompt batches are multiplied by the group size:
    one optimizer step covers global_batch_size prompts, one generation round rollout_batch_size prompts."""
    report_to = settings["report_to"]
    kwargs: dict[str, Any] = {
        "output_dir": settings["output_dir"],
        "learning_rate": float(settings["learning_rate"]),
        "beta": float(settings["beta"]),
        "num_generations": settings["num_generations"],
        "temperature": float(settings["temperature"]),
        "max_prompt_length": settings["max_prompt_length"],
        "max_completion_length": settings["max_completion_length"],
        "per_device_train_batch_size": batch.micro_update,
        "gradient_accumulation_steps": batch.gradient_accumulation_steps,
        "steps_per_generation": batch.steps_per_generation,
        "num_train_epochs": float(settings["num_train_epochs"]),
        "max_steps": settings["max_steps"] if settings["max_steps"] is not None else -1,
        "save_steps": settings["save_steps"],
        "logging_steps": settings["logging_steps"],
        "report_to": report_to if isinstance(report_to, list) else [report_to],
        "seed": settings["seed"],
        "bf16": settings["bf16"],
        "fp16": settings["fp16"],
        "save_strategy": "steps",
    }
    kwargs.update(settings.get("trl") or {})
    return kwargs


def lora_kwargs(settings: dict[str, Any]) -> dict[str, Any] | None:
    """peft.LoraConfig fields, or None for full fine-tuning."""
    if settings["finetuning_type"] != "lora":
        return None
    target = settings["lora_target"]
    return {
        "r": settings["lora_rank"],
        "lora_alpha": settings["lora_alpha"],
        "lora_dropout": float(settings["lora_dropout"]),
        "target_modules": target if target == "all-linear" else [t.strip() for t in target.split(",") if t.strip()],
        "task_type": "CAUSAL_LM",
    }

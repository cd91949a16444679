"""The checks LLaMA-Factory 0.9.5's argument dataclasses (and transformers' TrainingArguments) make in
`__post_init__`, as rules: a config that breaks one of them stops `llamafactory-cli` before anything loads."""

from __future__ import annotations

import json
import math
from pathlib import Path

from llf_recipes import yamlio
from llf_recipes.errors import LlfError
from llf_recipes.schema.findings import Collector, Settings, names

JSON_KEYS = ("vllm_config", "sglang_config", "ray_init_kwargs", "accelerator_config", "fsdp_config",
             "gradient_checkpointing_kwargs", "lr_scheduler_kwargs")


def check_data(s: Settings, r: Collector) -> None:
    val_size = s.number("val_size") or 0.0
    datasets, eval_datasets = names(s["dataset"]), names(s["eval_dataset"])
    if val_size > 1e-6 and s["dataset"] is None:
        r.add("val-size-conflict", "val_size", "val_size splits the training dataset, but no dataset is given",
              "add dataset: NAME, or remove val_size")
    if val_size > 1e-6 and s["eval_dataset"] is not None:
        r.add("val-size-conflict", "val_size", "val_size and eval_dataset both define the evaluation data",
              "remove val_size (eval_dataset is used), or remove eval_dataset")
    if s.set("interleave_probs"):
        if s["mix_strategy"] == "concat":
            r.add("interleave-probs", "interleave_probs", "interleave_probs is only read when datasets are interleaved",
                  "add mix_strategy: interleave_under (or interleave_over), or remove interleave_probs")
        else:
            try:
                probs = [float(p) for p in names(s["interleave_probs"])]
            except ValueError:
                r.add("interleave-probs", "interleave_probs", f"{s['interleave_probs']!r} is not a list of numbers",
                      "write one probability per dataset, e.g. 0.7,0.3")
                probs = None
            miscounted = False
            for key, given in (("dataset", datasets), ("eval_dataset", eval_datasets)):
                if probs is not None and s[key] is not None and len(given) != len(probs):
                    miscounted = True
                    r.add("interleave-probs", "interleave_probs", f"{len(probs)} probabilities for {len(given)} {key} "
                          "entries", f"give exactly one probability per {key} entry")
            mixed = datasets if len(datasets) > 1 else eval_datasets
            # one dataset is returned as it is, its weight unread; a miscount is fixed first (then the sum)
            if probs is not None and len(mixed) > 1 and not miscounted:
                check_probabilities(probs, r, mixed)
    check_stopping(s, r)
    if s.on("streaming"):
        if 1e-6 < val_size < 1:
            r.add("streaming-options", "val_size", f"a streamed dataset has no known size, so val_size {val_size} cannot be "
                  "a fraction", "give val_size as a number of examples (e.g. 1000)")
        if s.set("max_samples"):
            r.add("streaming-options", "max_samples", "max_samples does not work with streaming",
                  "remove max_samples (max_steps bounds a streamed run), or remove streaming")
    if s.on("mask_history") and s.on("train_on_prompt"):
        r.add("mask-history-conflict", "mask_history", "mask_history and train_on_prompt contradict each other",
              "remove one of them")


def check_probabilities(probs: list[float], r: Collector, datasets: list[str] = ()) -> None:
    """datasets' interleave_datasets draws each row's source with numpy, which refuses weights that are negative or
    do not sum to 1 (within about 1e-8), only once the data loads."""
    given = ",".join(f"{p:g}" for p in probs)
    bad = [i for i, p in enumerate(probs) if p < 0 or math.isnan(p)]
    if bad:
        which = ", ".join(f"{probs[i]:g}" + (f" for {datasets[i]}" if len(datasets) == len(probs) else "") for i in bad)
        r.add("interleave-probs-sum", "interleave_probs", f"{given} has a negative weight ({which})",
              "give each dataset a probability between 0 and 1; together they sum to 1")
    elif abs(sum(probs) - 1.0) > 1e-8:
        total = sum(probs)
        r.add("interleave-probs-sum", "interleave_probs", f"{given}: the probabilities sum to {total:g}, not 1",
              "scale them to sum to 1, e.g. " + ",".join(f"{p / total:.4g}" for p in probs) if total > 0
              else "give each dataset a probability; together they sum to 1")


# mix_strategy -> the stopping_strategy LLaMA-Factory 0.9.5 passes to datasets.interleave_datasets
STOPPING = {"interleave_under": "first_exhausted", "interleave_over": "all_exhausted",
            "interleave_once": "all_exhausted_without_replacement"}


def check_stopping(s: Settings, r: Collector) -> None:
    """interleave_once needs the stopping strategy datasets added in 4.1; an older one stops the run at data loading."""
    if s["mix_strategy"] != "interleave_once" or len(names(s["dataset"])) < 2:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("datasets")
    except PackageNotFoundError:
        return
    numbers = tuple(int(x) if x.isdigit() else 0 for x in installed.split(".")[:2])
    if numbers < (4, 1):
        r.add("mix-stopping-strategy", "mix_strategy", f"interleave_once asks datasets {installed} for the stopping "
              "strategy all_exhausted_without_replacement, which it does not have (4.1 added it)",
              "use interleave_under (stop when one dataset runs out) or interleave_over (repeat the smaller ones), "
              "or install datasets>=4.1")


def check_finetuning(s: Settings, r: Collector) -> None:
    stage, method = s["stage"], s["finetuning_type"]
    if stage == "ppo" and s["reward_model_type"] in ("lora", "oft") and s["reward_model_type"] != method:
        kind = s["reward_model_type"]
        r.add("reward-model-type", "reward_model_type", f"a {kind} reward model needs finetuning_type {kind}, not {method}",
              "set reward_model_type: full (a full reward model) for full/freeze PPO")
    if stage == "dpo" and s["pref_loss"] != "sigmoid" and (s.number("dpo_label_smoothing") or 0) > 1e-6:
        r.add("dpo-label-smoothing", "dpo_label_smoothing", f"dpo_label_smoothing only applies to pref_loss sigmoid, not "
              f"{s['pref_loss']}", "remove dpo_label_smoothing, or use pref_loss: sigmoid")
    if s.on("use_llama_pro") and method == "full":
        r.add("llama-pro-method", "use_llama_pro", "LLaMA Pro expands blocks for freeze or lora tuning, not full",
              "set finetuning_type: freeze, or remove use_llama_pro")
    optimizers = [k for k in ("use_galore", "use_apollo", "use_badam") if s.on(k)]
    if optimizers and method == "lora":
        r.add("optimizer-conflict", optimizers[0], f"{optimizers[0]} trains full weights and does not work with LoRA",
              "set finetuning_type: full, or remove " + optimizers[0])
    if len(optimizers) > 1:
        r.add("optimizer-conflict", optimizers[1], f"{' and '.join(optimizers)} cannot be used together", "keep one of them")
    uses_ref_model = stage == "dpo" and s["pref_loss"] not in ("orpo", "simpo")
    if s.on("pissa_init") and (stage in ("ppo", "kto") or uses_ref_model):
        r.add("pissa-stage", "pissa_init", f"PiSSA initialisation does not work for stage {stage}"
              + (" with a reference model" if uses_ref_model else ""), "remove pissa_init")
    if method != "lora":
        for key in ("loraplus_lr_ratio", "use_rslora", "use_dora", "pissa_init"):
            if s.set(key) and s[key] is not False:
                r.add("lora-only-option", key, f"{key} only applies to finetuning_type lora, not {method}",
                      f"remove {key}, or set finetuning_type: lora")
    for key in ("ref_model_quantization_bit", "reward_model_quantization_bit"):
        if s.set(key) and s[key] not in (4, 8):
            r.add("quantization-bits", key, f"{key} must be 4 or 8, not {s[key]!r}", f"set {key}: 4 (or 8)")


def check_model_args(s: Settings, r: Collector, base: Path | None) -> None:
    if not s.set("model_name_or_path"):
        r.add("model-required", "model_name_or_path", "no model is given", "add model_name_or_path: a hub id or a local path")
    for low, high in (("image_min_pixels", "image_max_pixels"), ("video_min_pixels", "video_max_pixels")):
        lo, hi = s.number(low), s.number(high)
        if lo is not None and hi is not None and hi < lo:
            r.add("pixels-range", high, f"{high} {int(hi)} is smaller than {low} {int(lo)}", f"raise {high} or lower {low}")
    if s.set("export_quantization_bit") and not s.set("export_quantization_dataset"):
        r.add("export-quantization-dataset", "export_quantization_dataset", "quantizing an export needs calibration data",
              "add export_quantization_dataset: a JSON file of text samples (LLaMA-Factory ships data/c4_demo.jsonl)")
    for key in JSON_KEYS:
        value = s.config.get(key)
        if isinstance(value, str) and value.startswith("{"):
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                r.add("invalid-json-value", key, f"is a JSON string that does not parse: {exc.msg} at column {exc.colno}",
                      "write it as a YAML mapping instead of a string")
    tokens = s.config.get("new_special_tokens_config")
    if isinstance(tokens, str):
        path = Path(tokens) if Path(tokens).is_absolute() or base is None else base / tokens
        problem = None
        if not path.is_file():
            problem = f"{tokens} does not exist"
        else:
            try:
                if not isinstance(yamlio.load(path.read_text(encoding="utf-8"), where=str(path)), dict):
                    problem = f"{tokens} is not a mapping of tokens to descriptions"
            except (LlfError, OSError, UnicodeDecodeError) as exc:
                problem = f"{tokens} cannot be read: {exc}"
        if problem:
            r.add("special-tokens-config", "new_special_tokens_config", problem,
                  "point it at a YAML file mapping each new token to its description")


def check_training_args(s: Settings, r: Collector) -> None:
    """transformers' TrainingArguments.__post_init__ (5.x): strategies, steps and precision."""
    eval_strategy = s.text("eval_strategy") or "no"
    save_strategy = s.text("save_strategy") or "steps"
    logging_steps, eval_steps, save_steps = s.number("logging_steps"), s.number("eval_steps"), s.number("save_steps")
    if eval_strategy == "steps" and not eval_steps and logging_steps is not None and logging_steps <= 0:
        r.add("steps-settings", "eval_steps", "eval_strategy steps needs eval_steps (or logging_steps to fall back on)",
              "add eval_steps: N")
    if eval_strategy == "steps" and not eval_steps:
        eval_steps = logging_steps
    if s.text("logging_strategy") in (None, "steps") and logging_steps == 0:
        r.add("steps-settings", "logging_steps", "logging_strategy steps needs logging_steps above 0", "set logging_steps: 10")
    for key, value, active in (("logging_steps", logging_steps, s.text("logging_strategy") in (None, "steps")),
                               ("eval_steps", eval_steps, eval_strategy == "steps"),
                               ("save_steps", save_steps, save_strategy == "steps")):
        if active and value is not None and value > 1 and value != int(value):
            r.add("steps-settings", key, f"{key} {value} above 1 must be a whole number of steps (below 1 it is a "
                  "fraction of the run)", f"set {key}: {int(value)}")
    if s.on("load_best_model_at_end") and save_strategy != "best":
        if eval_strategy != save_strategy:
            r.add("best-model-strategy", "load_best_model_at_end", f"load_best_model_at_end needs the save and eval "
                  f"strategies to match, got eval_strategy {eval_strategy} and save_strategy {save_strategy}",
                  f"set eval_strategy: {save_strategy} (or save_strategy: best)")
        elif eval_strategy == "steps" and eval_steps and save_steps and not _multiple(save_steps, eval_steps):
            r.add("best-model-strategy", "save_steps", f"load_best_model_at_end needs save_steps ({save_steps:g}) to be a "
                  f"multiple of eval_steps ({eval_steps:g})", f"set save_steps to a multiple of {eval_steps:g}")
    if s.on("fp16") and s.on("bf16"):
        r.add("precision-conflict", "fp16", "fp16 and bf16 are both true", "keep one: bf16 on Ampere or newer GPUs, fp16 on older ones")
    if s.on("fp16_full_eval") and s.on("bf16_full_eval"):
        r.add("precision-conflict", "fp16_full_eval", "fp16_full_eval and bf16_full_eval are both true", "keep one of them")
    scheduler = s.text("lr_scheduler_type")
    if scheduler in ("reduce_lr_on_plateau", "greedy") and eval_strategy == "no":
        r.add("scheduler-needs-eval", "lr_scheduler_type", f"lr_scheduler_type {scheduler} steps on evaluation results, "
              "but eval_strategy is no", "add eval_strategy: steps (with val_size or eval_dataset), or use cosine")
    warmup = s.number("warmup_steps")
    if warmup is not None and warmup < 0:
        r.add("warmup-negative", "warmup_steps", f"warmup_steps {warmup:g} is negative", "set warmup_steps to 0 or more")
    if s.number("dataloader_num_workers") == 0 and s.set("dataloader_prefetch_factor"):
        r.add("prefetch-needs-workers", "dataloader_prefetch_factor", "dataloader_prefetch_factor needs worker processes",
              "add dataloader_num_workers: 4, or remove dataloader_prefetch_factor")
    cache_steps = s["torch_empty_cache_steps"]
    if cache_steps is not None and not (isinstance(cache_steps, int) and not isinstance(cache_steps, bool) and cache_steps > 0):
        r.add("steps-settings", "torch_empty_cache_steps", f"torch_empty_cache_steps must be a positive whole number, "
              f"not {cache_steps!r}", "set torch_empty_cache_steps: 100, or remove it")


def _multiple(save: float, every: float) -> bool:
    if (save < 1) != (every < 1):
        return False
    return round(save * 1_000_000) % round(every * 1_000_000) == 0


RULES = (
    "val-size-conflict", "interleave-probs", "interleave-probs-sum", "mix-stopping-strategy", "streaming-options", "mask-history-conflict", "reward-model-type",
    "dpo-label-smoothing", "llama-pro-method", "optimizer-conflict", "pissa-stage", "lora-only-option",
    "quantization-bits", "model-required", "pixels-range", "export-quantization-dataset", "invalid-json-value",
    "special-tokens-config", "steps-settings", "best-model-strategy", "precision-conflict", "scheduler-needs-eval",
    "warmup-negative", "prefetch-needs-workers",
)

"""The checks LLaMA-Factory 0.9.5 makes when it parses its arguments (`hparams/parser.py`: get_train_args,
get_infer_args, _verify_model_args), as rules. Launch-dependent ones are evaluated for the launch being validated;
the ones that only probe hardware are left out (the config is checked for the GPU machine it targets)."""

from __future__ import annotations

import re
from pathlib import Path

from llf_recipes.schema.findings import Collector, LaunchInfo, Settings, names

PPO_LOGGERS = {"wandb", "tensorboard", "trackio", "none"}
# The weight files whose presence, without a checkpoint-N directory to resume from, makes LLaMA-Factory refuse to
# train into an output directory (extras/constants.py CHECKPOINT_NAMES).
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors.index.json", "model.safetensors",
                "pytorch_model.bin.index.json", "pytorch_model.bin")
_CHECKPOINT_DIR = re.compile(r"^checkpoint-\d+$")


def _eval_requested(s: Settings) -> list[str]:
    # TrainingArguments turns do_eval on when an eval_strategy is set, before LLaMA-Factory looks at it.
    keys = [k for k in ("do_eval", "do_predict", "predict_with_generate") if s.on(k)]
    if not keys and s.text("eval_strategy") not in (None, "no"):
        keys = ["eval_strategy"]
    return keys


def check_train(s: Settings, launch: LaunchInfo, zero_stage: int | None, r: Collector, base: Path | None = None) -> None:
    stage = s["stage"]
    zero3 = zero_stage == 3
    if stage != "sft":
        for key in ("predict_with_generate", "train_on_prompt", "mask_history"):
            if s.on(key):
                r.add("sft-only-option", key, f"{key} only applies to stage sft, not {stage}",
                      f"remove {key}, or use stage: sft")
    if stage == "sft" and s.on("do_predict") and not s.on("predict_with_generate"):
        r.add("predict-needs-generate", "predict_with_generate", "do_predict saves generated predictions, which needs "
              "predict_with_generate", "add predict_with_generate: true (or remove do_predict)")
    if stage in ("rm", "ppo") and s.on("load_best_model_at_end"):
        r.add("best-model-unsupported", "load_best_model_at_end", f"stage {stage} does not support load_best_model_at_end",
              "remove load_best_model_at_end")
    if stage == "ppo":
        if not s.on("do_train"):
            r.add("ppo-options", "do_train", "PPO only trains; it does not evaluate",
                  "set do_train: true (evaluate the model with an sft stage and do_eval)")
        if s.on("shift_attn"):
            r.add("ppo-options", "shift_attn", "PPO training does not work with S^2-Attn", "remove shift_attn")
        if s["reward_model_type"] == "lora":
            for key in ("use_kt", "use_unsloth"):
                if s.on(key):
                    r.add("ppo-options", key, f"{key} does not support a LoRA reward model",
                          f"remove {key}, or set reward_model_type: full")
        loggers = names(s["report_to"])
        bad = [x for x in loggers if x not in PPO_LOGGERS]
        if bad:
            r.add("ppo-options", "report_to", f"PPO only reports to wandb, tensorboard or trackio, not {', '.join(bad)}",
                  "set report_to to wandb, tensorboard, trackio or none")
    if s.number("max_steps") == -1 and s.on("streaming"):
        r.add("streaming-needs-max-steps", "max_steps", "streaming datasets have no known length, so the number of steps "
              "must be given", "add max_steps: N (e.g. 1000)")
    if s.on("do_train") and not names(s["dataset"]):
        r.add("train-needs-dataset", "dataset", "do_train is set but no dataset is given",
              "add dataset: NAME (an entry of dataset_info.json)")
    requested = _eval_requested(s)
    if requested and not names(s["eval_dataset"]) and (s.number("val_size") or 0) < 1e-6:
        r.add("eval-needs-data", "val_size", f"{requested[0]} needs evaluation data, but neither val_size nor eval_dataset "
              "is set", f"add val_size: 0.1 (or eval_dataset: NAME), or remove {requested[0]}")
    if s.on("predict_with_generate"):
        if zero3:
            r.add("generate-conflict", "predict_with_generate", "predict_with_generate does not work with DeepSpeed ZeRO-3",
                  "use a ZeRO-2 profile (--set deepspeed=z2) for prediction, or remove predict_with_generate")
        if s.on("compute_accuracy"):
            r.add("generate-conflict", "compute_accuracy", "compute_accuracy cannot be used with predict_with_generate",
                  "remove one of them (compute_accuracy scores teacher-forced tokens, predict_with_generate generates)")
    if s.on("do_train") and s["quantization_device_map"] == "auto":
        r.add("quantized-device-map", "quantization_device_map", "a device map for a quantized model only works for "
              "inference, not training", "remove quantization_device_map")
    for key, message in (("pissa_init", "PiSSA initialisation"), ("pure_bf16", "pure_bf16"), ("use_unsloth", "unsloth"),
                         ("use_kt", "KTransformers")):
        if zero3 and s.on(key):
            fix = ("run scripts/pissa_init.py first and load the result" if key == "pissa_init"
                   else "use a ZeRO-2 profile (--set deepspeed=z2)") + f", or remove {key}"
            r.add("zero3-conflict", key, f"{message} does not work with DeepSpeed ZeRO-3", fix)
    if launch.torchrun:
        if s.on("use_galore") and s.on("galore_layerwise"):
            r.add("layerwise-distributed", "galore_layerwise", "layer-wise GaLore does not support distributed training",
                  "remove galore_layerwise, or train on one device without DeepSpeed")
        if s.on("use_apollo") and s.on("apollo_layerwise"):
            r.add("layerwise-distributed", "apollo_layerwise", "layer-wise APOLLO does not support distributed training",
                  "remove apollo_layerwise, or train on one device without DeepSpeed")
        if s.on("use_badam"):
            if s["badam_mode"] == "ratio":
                r.add("layerwise-distributed", "badam_mode", "ratio-based BAdam does not support distributed training",
                      "set badam_mode: layer with a ZeRO-3 profile (--set deepspeed=z3), or train on one device")
            elif not zero3:
                r.add("layerwise-distributed", "use_badam", "layer-wise BAdam under a distributed launch needs DeepSpeed ZeRO-3",
                      "add a ZeRO-3 profile (--set deepspeed=z3), or train on one device")
    if s.set("deepspeed"):
        for key in ("use_galore", "use_apollo"):
            if s.on(key):
                r.add("optimizer-deepspeed", key, f"{key} does not work with DeepSpeed",
                      f"remove deepspeed (--set deepspeed=none), or remove {key}")
    if s.on("fp8") and s.set("quantization_bit"):
        r.add("fp8-quantization", "fp8", "FP8 training does not work on a quantized model",
              "remove fp8, or remove quantization_bit")
    if s["infer_backend"] not in (None, "huggingface"):
        r.add("infer-backend-train", "infer_backend", f"infer_backend {s['infer_backend']} only serves chat/api/webchat, "
              "not training", "remove infer_backend from the training config")
    if "trackio" in names(s["report_to"]) and not s["project"]:
        r.add("trackio-needs-project", "project", "reporting to trackio needs a project name", "add project: NAME")
    _check_output_dir(s, base, r)


def _check_output_dir(s: Settings, base: Path | None, r: Collector) -> None:
    """A finished model in output_dir and no checkpoint to resume from: LLaMA-Factory will not overwrite it."""
    output_dir = s.text("output_dir")
    if not output_dir or not s.on("do_train") or s.set("resume_from_checkpoint") or s.on("overwrite_output_dir"):
        return
    if s["stage"] in ("rm", "ppo") and s["finetuning_type"] in ("full", "freeze"):
        return  # these stages never resume, so LLaMA-Factory does not look
    path = Path(output_dir).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_dir():
        return
    entries = list(path.iterdir())
    if any(e.is_dir() and _CHECKPOINT_DIR.match(e.name) for e in entries):
        return  # LLaMA-Factory resumes from the last checkpoint
    found = sorted(e.name for e in entries if e.name in WEIGHT_FILES and e.is_file())
    if found:
        r.add("output-dir-not-empty", "output_dir", f"{output_dir} already holds a trained model ({found[0]}) and no "
              "checkpoint to resume from", "add overwrite_output_dir: true to train over it, or choose another output_dir")


def check_model(s: Settings, r: Collector) -> None:
    """_verify_model_args: the adapter and quantization constraints, for every verb."""
    method = s["finetuning_type"]
    adapters = names(s["adapter_name_or_path"]) if isinstance(s["adapter_name_or_path"], str) else []
    if adapters and method != "lora":
        r.add("adapter-needs-lora", "adapter_name_or_path", f"adapters are only loaded for finetuning_type lora, not {method}",
              "set finetuning_type: lora, or remove adapter_name_or_path (merge the adapter first with "
              "`llamafactory-cli export` and train from the merged model)")
    if not s.set("quantization_bit"):
        return
    for key, message, fix in (
        ("pissa_init", "PiSSA cannot be initialised on a quantized model",
         "run LLaMA-Factory's scripts/pissa_init.py on the full model first, or remove pissa_init"),
        ("resize_vocab", "the embedding layers of a quantized model cannot be resized", "remove resize_vocab, or quantization_bit"),
    ):
        if s.on(key):
            r.add("quantization-conflict", key, message, fix)
    if adapters and s.on("create_new_adapter"):
        r.add("quantization-conflict", "create_new_adapter", "a new adapter cannot be created on a quantized model",
              "remove create_new_adapter (training continues the given adapter)")
    if len(adapters) > 1:
        r.add("quantization-conflict", "adapter_name_or_path", "a quantized model takes a single adapter",
              "merge the adapters first (llamafactory-cli export), then name one")


def vllm_adapters(adapters: list[str]) -> str | None:
    """LLaMA-Factory's vLLM engine loads one LoRA adapter (its parser refuses more): what is wrong, or None."""
    return f"vLLM loads one LoRA adapter, not a stack of {len(adapters)}" if len(adapters) > 1 else None


def check_infer(s: Settings, r: Collector) -> None:
    if s["infer_backend"] != "vllm":
        return
    adapters = names(s["adapter_name_or_path"]) if isinstance(s["adapter_name_or_path"], str) else []
    stacked = vllm_adapters(adapters)
    for key, bad, message, fix in (
        ("stage", s["stage"] != "sft", "vLLM only serves auto-regressive models (stage sft)", "remove stage, or use infer_backend: huggingface"),
        ("quantization_bit", s.set("quantization_bit"), ("vLLM does not support bitsandbytes quantization (GPTQ and AWQ "
         "models work)"), "remove quantization_bit, or use infer_backend: huggingface"),
        ("rope_scaling", s.set("rope_scaling"), "vLLM does not support RoPE scaling", "remove rope_scaling"),
        ("adapter_name_or_path", stacked is not None, stacked, "merge the adapters first (llamafactory-cli export)"),
    ):
        if bad:
            r.add("vllm-limits", key, message, fix)


RULES = (
    "sft-only-option", "predict-needs-generate", "best-model-unsupported", "ppo-options", "streaming-needs-max-steps",
    "train-needs-dataset", "eval-needs-data", "generate-conflict", "quantized-device-map", "zero3-conflict",
    "layerwise-distributed", "optimizer-deepspeed", "fp8-quantization", "infer-backend-train", "trackio-needs-project",
    "adapter-needs-lora", "quantization-conflict", "vllm-limits", "output-dir-not-empty",
)

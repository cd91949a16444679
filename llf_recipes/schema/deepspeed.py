"""A DeepSpeed config against the LLaMA-Factory config it is used with.

The HF Trainer fills every `"auto"` value from the training arguments; any other value must equal the training
argument it stands for, or training stops after the model has loaded ("Please correct the following DeepSpeed
config values that mismatch TrainingArguments values"). These checks make that comparison before any GPU is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llf_recipes.schema.findings import Collector, Settings


class DeepSpeedSource:
    """The DeepSpeed config a `deepspeed` value points at: a file, an inline mapping or a JSON string."""

    def __init__(self, value: Any, base: Path | None = None) -> None:
        self.value = value
        self.label = "the inline DeepSpeed config"
        self.config: dict[str, Any] | None = None
        self.problem: tuple[str, str, str] | None = None  # (rule, message, fix)
        if isinstance(value, dict):
            self.config = value
        elif isinstance(value, str) and value.lstrip().startswith("{"):
            self._parse(value, "the deepspeed JSON string")
        elif isinstance(value, str) and value:
            path = Path(value).expanduser()
            if not path.is_absolute() and base is not None:
                path = base / path
            self.label = value
            if not path.is_file():
                self.problem = ("deepspeed-missing", f"the DeepSpeed config {value} does not exist"
                                + (f" (looked in {base})" if base is not None and not Path(value).is_absolute() else ""),
                                ("point deepspeed at an existing JSON file (a relative path is read from the directory "
                                "llamafactory-cli starts in), or use a bundled profile: --set deepspeed=z2"))
            else:
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    self.problem = ("deepspeed-invalid", f"{value} cannot be read: {exc}", "point deepspeed at a JSON file")
                else:
                    self._parse(text, value)

    def _parse(self, text: str, label: str) -> None:
        self.label = label
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            self.problem = ("deepspeed-invalid", f"{label} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                            f"fix the JSON at {label}:{exc.lineno} (a trailing comma, a comment or single quotes are typical)")
            return
        if not isinstance(loaded, dict):
            self.problem = ("deepspeed-invalid", f"{label} holds a JSON {type(loaded).__name__}, not an object of DeepSpeed settings",
                            "write the DeepSpeed settings as one JSON object ({...})")
            return
        self.config = loaded

    @property
    def zero_stage(self) -> int | None:
        zero = (self.config or {}).get("zero_optimization")
        stage = zero.get("stage") if isinstance(zero, dict) else None
        return stage if isinstance(stage, int) else None


def _node(config: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _same(ds_value: Any, hf_value: Any) -> bool:
    if isinstance(ds_value, (list, tuple)) and isinstance(hf_value, (list, tuple)):
        return len(ds_value) == len(hf_value) and all(_same(a, b) for a, b in zip(ds_value, hf_value))
    if isinstance(ds_value, (int, float)) and isinstance(hf_value, (int, float)):
        return float(ds_value) == float(hf_value)
    return ds_value == hf_value


def check_deepspeed(s: Settings, ds: DeepSpeedSource, world_size: int, report: Collector) -> None:
    if ds.problem:
        rule, message, fix = ds.problem
        report.add(rule, "deepspeed", message, fix)
        return
    if ds.config is None:
        return
    numbers = {key: s.number(key) for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_grad_norm",
                                              "learning_rate", "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay")}
    if any(v is None for v in numbers.values()):
        return  # a key of the wrong type is reported by the type check
    micro, accumulation = numbers["per_device_train_batch_size"], numbers["gradient_accumulation_steps"]
    expected = [
        ("train_micro_batch_size_per_gpu", micro, "per_device_train_batch_size"),
        ("gradient_accumulation_steps", accumulation, "gradient_accumulation_steps"),
        ("train_batch_size", world_size * micro * accumulation, "deepspeed"),
        ("gradient_clipping", numbers["max_grad_norm"], "max_grad_norm"),
        ("optimizer.params.lr", numbers["learning_rate"], "learning_rate"),
        ("optimizer.params.betas", [numbers["adam_beta1"], numbers["adam_beta2"]], "adam_beta1"),
        ("optimizer.params.eps", numbers["adam_epsilon"], "adam_epsilon"),
        ("optimizer.params.weight_decay", numbers["weight_decay"], "weight_decay"),
        ("scheduler.params.warmup_max_lr", numbers["learning_rate"], "learning_rate"),
        ("fp16.enabled", s.on("fp16") or s.on("fp16_full_eval"), "fp16"),
        ("bf16.enabled", s.on("bf16") or s.on("bf16_full_eval"), "bf16"),
    ]
    for ds_key, hf_value, key in expected:
        present, ds_value = _node(ds.config, ds_key)
        if not present or ds_value is None or ds_value == "auto" or _same(ds_value, hf_value):
            continue
        shown = _shown(hf_value)
        if ds_key == "train_batch_size":
            why = f"the layout gives {world_size} process(es) x {int(micro)} x {int(accumulation)} = {int(hf_value)}"
        else:
            why = f"the config has {key}: {shown}" if key in s.config else f"{key} is {shown} (its default)"
        report.add("deepspeed-mismatch", key, f"{ds.label} sets {ds_key} = {json.dumps(ds_value)}, but {why}; the HF "
                   "Trainer stops on the mismatch once the model has loaded",
                   f'set "{ds_key}": "auto" in {ds.label}, so the YAML decides')


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


RULES = ("deepspeed-missing", "deepspeed-invalid", "deepspeed-mismatch")

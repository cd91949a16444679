"""Validation of a LLaMA-Factory config: every finding names the stage, the key and the fix.

LLaMA-Factory itself only rejects unknown keys; enumerated values, cross-key constraints and dataset entries fail
late (after the model loads) or never. These rules catch them before any GPU is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llf_recipes.schema import SUPPORTED_VERSION, VERB_ARGS, keys_for
from llf_recipes.suggest import nearest

RANKING_STAGES = {"rm", "dpo"}
SILENT_SIGMOID = {"hinge", "ipo", "kto_pair"}
ADAPTER_METHODS = {"lora", "oft"}


@dataclass(frozen=True)
class Finding:
    rule: str
    key: str
    message: str
    fix: str
    stage: str | None = None
    severity: str = "error"  # error | warning

    def format(self) -> str:
        where = f"[{self.stage}] " if self.stage else ""
        return f"{self.severity}: {where}{self.key}: {self.message}\n  fix: {self.fix}  (rule {self.rule})"


@dataclass(frozen=True)
class LaunchInfo:
    torchrun: bool = False


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return type(value).__name__


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(i).strip() for i in items if str(i).strip()]


def check_keys(config: dict[str, Any], verb: str, stage: str | None, version: str = SUPPORTED_VERSION) -> list[Finding]:
    """Unknown keys, wrong value kinds and values outside an enumerated set, against LLaMA-Factory `version`."""
    schema = keys_for(verb, version)
    train_keys = keys_for("train", version)
    out: list[Finding] = []
    for key, value in config.items():
        spec = schema.get(key)
        if spec is None:
            if VERB_ARGS.get(verb) == "infer" and key in train_keys:
                out.append(Finding("unknown-key", key, f"is a training key; `llamafactory-cli {verb}` does not accept it",
                                   "remove it from the export/chat config", stage))
                continue
            guess = nearest(key, schema)
            out.append(Finding("unknown-key", key, f"is not a LLaMA-Factory {version} `{verb}` argument",
                               f"did you mean `{guess}`?" if guess else "remove it", stage))
            continue
        kinds = spec["kinds"]
        kind = _kind(value)
        if "any" not in kinds and kind not in kinds:
            want = " or ".join(k for k in kinds if k != "null") or "null"
            out.append(Finding("wrong-type", key, f"must be {want}, got {kind} {value!r}",
                               f"write a {want} value" + (" (e.g. 1.0e-4, not a quoted string)" if "float" in kinds else ""), stage))
            continue
        choices = spec.get("choices")
        if choices and value is not None:
            values = value if isinstance(value, list) else [value]
            for item in values:
                if item not in choices:
                    guess = nearest(str(item), [str(c) for c in choices])
                    shown = ", ".join(map(str, choices[:12])) + (", ..." if len(choices) > 12 else "")
                    out.append(Finding("invalid-choice", key, f"{item!r} is not one of: {shown}",
                                       f"use {guess!r}" if guess else "choose one of the values listed", stage))
    return out


def check_semantics(
    config: dict[str, Any],
    verb: str,
    stage: str | None,
    datasets: dict[str, dict[str, Any]],
    launch: LaunchInfo,
    deepspeed_json: dict[str, Any] | None = None,
) -> list[Finding]:
    """Cross-key rules that LLaMA-Factory checks late, or never."""
    out: list[Finding] = []
    lf_stage = config.get("stage", "sft")
    method = config.get("finetuning_type", "lora")

    def add(rule: str, key: str, message: str, fix: str) -> None:
        out.append(Finding(rule, key, message, fix, stage))

    if config.get("quantization_bit") is not None and method not in ADAPTER_METHODS:
        add("quantization-needs-adapter", "quantization_bit",
            f"quantization only works with finetuning_type lora or oft, not {method!r}",
            "set finetuning_type: lora (QLoRA), or remove quantization_bit for full/freeze tuning")

    if verb == "train":
        for key in ("dataset", "eval_dataset"):
            for name in _names(config.get(key)):
                entry = datasets.get(name)
                if entry is None:
                    guess = nearest(name, datasets)
                    add("undefined-dataset", key, f"no dataset entry defines {name!r}",
                        (f"did you mean {guess!r}? " if guess else "") + "add it to dataset_info.d/ or run "
                        f"`llf-recipes register --file FILE --name {name} --stage {lf_stage}`")
                    continue
                ranking = bool(entry.get("ranking", False))
                if lf_stage in RANKING_STAGES and not ranking:
                    add("ranking-mismatch", key, f"stage {lf_stage} needs paired data but entry {name!r} has no `ranking: true`",
                        "use a preference dataset (chosen/rejected) registered with ranking: true")
                elif lf_stage not in RANKING_STAGES and ranking:
                    add("ranking-mismatch", key, f"entry {name!r} is ranked (chosen/rejected) but stage {lf_stage} reads single answers",
                        "use stage rm or dpo with this dataset, or a dataset with ranking: false")
                if lf_stage == "kto" and not (entry.get("columns") or {}).get("kto_tag"):
                    add("kto-needs-tag", key, f"stage kto needs a `kto_tag` column, entry {name!r} has none",
                        "use a KTO dataset whose columns map kto_tag to a boolean field")

    if lf_stage == "ppo" and verb == "train" and not config.get("reward_model"):
        add("ppo-needs-reward-model", "reward_model", "stage ppo needs a reward model",
            "set reward_model to a reward model's output dir (in a recipe: {{ stage_output('rm') }})")

    if config.get("deepspeed") and not launch.torchrun:
        add("deepspeed-needs-torchrun", "deepspeed", "DeepSpeed needs a distributed launch, which a single process without torchrun is not",
            "set FORCE_TORCHRUN=1 (llf-recipes run does this itself), or remove deepspeed")

    if config.get("neat_packing") and lf_stage != "sft":
        add("neat-packing-sft-only", "neat_packing", f"neat_packing only applies to stage sft, not {lf_stage}",
            "remove neat_packing")

    if config.get("use_unsloth") and deepspeed_json is not None:
        zero = (deepspeed_json.get("zero_optimization") or {}).get("stage")
        if zero == 3:
            add("unsloth-zero3", "use_unsloth", "unsloth does not work with DeepSpeed ZeRO-3",
                "remove use_unsloth, or use a ZeRO-2 profile (--set deepspeed=z2)")

    if lf_stage == "dpo" and config.get("pref_loss") in SILENT_SIGMOID:
        add("pref-loss-fallback", "pref_loss",
            f"pref_loss {config['pref_loss']!r} silently trains the sigmoid loss with trl 0.24 (LLaMA-Factory 0.9.5 calls dpo_loss without loss_type)",
            "use sigmoid, orpo or simpo; pass --allow pref-loss-fallback to train anyway and get sigmoid")

    if launch.torchrun:
        for key, value in config.items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and any(ch.isspace() for ch in item):
                    add("space-under-torchrun", key,
                        f"{item!r} contains white space, which LLaMA-Factory's torchrun launcher splits into separate arguments",
                        "use a path or value without spaces (rename or symlink the directory)")
                    break
    return out


def validate_config(
    config: dict[str, Any],
    verb: str = "train",
    *,
    stage: str | None = None,
    datasets: dict[str, dict[str, Any]] | None = None,
    launch: LaunchInfo | None = None,
    deepspeed_json: dict[str, Any] | None = None,
    allow: set[str] | frozenset[str] = frozenset(),
    version: str = SUPPORTED_VERSION,
) -> list[Finding]:
    findings = check_keys(config, verb, stage, version) + check_semantics(
        config, verb, stage, datasets or {}, launch or LaunchInfo(), deepspeed_json
    )
    return [
        Finding(f.rule, f.key, f.message, f.fix, f.stage, "warning") if f.rule in allow else f for f in findings
    ]


RULES = (
    "unknown-key", "wrong-type", "invalid-choice", "quantization-needs-adapter", "undefined-dataset",
    "ranking-mismatch", "kto-needs-tag", "ppo-needs-reward-model", "deepspeed-needs-torchrun",
    "neat-packing-sft-only", "unsloth-zero3", "pref-loss-fallback", "space-under-torchrun", "ppo-needs-old-trl",
)

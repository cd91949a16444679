"""Validation of a LLaMA-Factory config: every finding names the stage, the key and the fix.

Keys, value kinds and choices come from the argument snapshot; the checks LLaMA-Factory makes at start-up are in
startup.py and arguments.py, DeepSpeed against the config in deepspeed.py, optional packages in packages.py. The
rules here are the ones LLaMA-Factory checks late (after the model loads) or never: dataset entries, ranking, trl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llf_recipes.schema import SUPPORTED_VERSION, VERB_ARGS, arguments, deepspeed, keys_for, packages, startup
from llf_recipes.schema.deepspeed import DeepSpeedSource
from llf_recipes.schema.findings import Collector, Finding, LaunchInfo, Settings
from llf_recipes.schema.findings import kind as _kind
from llf_recipes.schema.findings import names as _names
from llf_recipes.suggest import nearest

__all__ = ["RULES", "Finding", "LaunchInfo", "validate_config"]

RANKING_STAGES = {"rm", "dpo"}
SILENT_SIGMOID = {"hinge", "ipo", "kto_pair"}
ADAPTER_METHODS = {"lora", "oft"}
# Values of a key that LLaMA-Factory does not take, but that mean something elsewhere in llf-recipes.
CHOICE_FIXES = {
    ("stage", "grpo"): "GRPO is not a LLaMA-Factory stage: write a recipe stage with `verb: grpo`, which runs on "
                       "EasyR1 (clusters) or TRL (one node); `llf-recipes show grpo-gsm8k` shows one",
}
# Datasets of these dataset_dir values are read from a hub, not from a local dataset_info.json.
HUB_DATASET_DIRS = ("ONLINE", "REMOTE:")


def _type_fix(key: str, value: Any, kinds: list[str], want: str) -> str:
    """The value to write instead: the same value unquoted, joined, or whole, where one exists."""
    if isinstance(value, list) and "str" in kinds:
        return f"write one comma-separated string: {key}: {','.join(map(str, value))}"
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and ("float" in kinds or ("int" in kinds and number.is_integer())):
            shown = int(number) if "float" not in kinds else text
            return f"write {key}: {shown} without quotes, so YAML reads a number"
        if text.lower() in ("true", "false", "yes", "no", "on", "off") and "bool" in kinds:
            return f"write {key}: {'true' if text.lower() in ('true', 'yes', 'on') else 'false'} without quotes"
    if isinstance(value, float) and "int" in kinds and "float" not in kinds:
        return f"write a whole number: {key}: {round(value)}"
    return f"write a {want} value for {key}"


def check_keys(config: dict[str, Any], verb: str, stage: str | None, version: str = SUPPORTED_VERSION) -> list[Finding]:
    """Unknown keys, wrong value kinds and values outside an enumerated set."""
    schema = keys_for(verb, version)  # the LLaMA-Factory version of the engine that runs the stage
    train_keys = keys_for("train", version)
    out: list[Finding] = []
    for key, value in config.items():
        spec = schema.get(key)
        if spec is None:
            if VERB_ARGS.get(verb) == "infer" and key in train_keys:
                out.append(Finding("unknown-key", key, f"is a training key; `llamafactory-cli {verb}` does not accept it",
                                   f"remove it from the {verb} config (it only applies to llamafactory-cli train)", stage))
                continue
            guess = nearest(key, schema)
            out.append(Finding("unknown-key", key, f"is not a LLaMA-Factory {version} `{verb}` argument",
                               f"did you mean `{guess}`?" if guess else f"remove `{key}`", stage))
            continue
        kinds = spec["kinds"]
        kind = _kind(value)
        if "any" not in kinds and kind not in kinds:
            want = " or ".join(k for k in kinds if k != "null") or "null"
            fix = _type_fix(key, value, kinds, want)
            out.append(Finding("wrong-type", key, f"must be {want}, got {kind} {value!r}", fix, stage))
            continue
        choices = spec.get("choices")
        if choices and value is not None:
            values = value if isinstance(value, list) else [value]
            for item in values:
                if item not in choices:
                    guess = nearest(str(item), [str(c) for c in choices])
                    shown = ", ".join(map(str, choices[:12])) + (", ..." if len(choices) > 12 else "")
                    fix = CHOICE_FIXES.get((key, item)) or (f"use {guess!r}" if guess else f"use one of: {shown}")
                    out.append(Finding("invalid-choice", key, f"{item!r} is not one of: {shown}", fix, stage))
    return out


def _examples(datasets: dict[str, dict[str, Any]], fits) -> str:
    """` (e.g. a, b)`: up to three registered entries of the kind a fix asks for."""
    names = [name for name, entry in datasets.items() if fits(entry)][:3]
    return f" (e.g. {', '.join(names)})" if names else ""


def check_semantics(
    config: dict[str, Any],
    verb: str,
    stage: str | None,
    datasets: dict[str, dict[str, Any]],
    launch: LaunchInfo,
) -> list[Finding]:
    """Cross-key rules that LLaMA-Factory checks late, or never."""
    out: list[Finding] = []
    # A value of the wrong kind is named by check_keys; here it reads as text, so no rule breaks on it.
    lf_stage = config.get("stage", "sft") if isinstance(config.get("stage", "sft"), str) else str(config.get("stage"))
    method = config.get("finetuning_type", "lora")
    method = method if isinstance(method, str) else str(method)

    def add(rule: str, key: str, message: str, fix: str) -> None:
        out.append(Finding(rule, key, message, fix, stage))

    if config.get("quantization_bit") is not None and method not in ADAPTER_METHODS:
        add("quantization-needs-adapter", "quantization_bit",
            f"quantization only works with finetuning_type lora or oft, not {method!r}",
            "set finetuning_type: lora (QLoRA), or remove quantization_bit for full/freeze tuning")

    dataset_dir = config.get("dataset_dir")
    from_hub = isinstance(dataset_dir, str) and dataset_dir.startswith(HUB_DATASET_DIRS)
    if verb == "train" and not from_hub:
        folder = dataset_dir if isinstance(dataset_dir, str) and dataset_dir else "data"
        info = Path(folder) / "dataset_info.json"  # LLaMA-Factory reads it from its working directory
        if folder != "data" and not Path(folder).is_dir() and any(_names(config.get(k)) for k in ("dataset", "eval_dataset")):
            out.append(Finding("dataset-dir-missing", "dataset_dir", f"dataset_dir {folder!r} does not exist: LLaMA-Factory "
                               f"reads {info} and the data files from it", "create it with the data (llf-recipes prepare "
                               f"... --data-dir {folder}), or set dataset_dir to the folder that holds dataset_info.json",
                               stage, "warning"))
        for key in ("dataset", "eval_dataset"):
            for name in _names(config.get(key)):
                entry = datasets.get(name)
                if entry is None:
                    guess = nearest(name, datasets)
                    read = f"in {info} or dataset_info.d/" if info.is_file() else \
                        f"in dataset_info.d/, and {info} does not exist"
                    where = "" if info.is_file() else ("point dataset_dir at the folder that holds LLaMA-Factory's "
                                                       "dataset_info.json (e.g. dataset_dir: LLaMA-Factory/data), or ")
                    add("undefined-dataset", key, f"no dataset entry defines {name!r} {read}",
                        (f"did you mean {guess!r}? " if guess else "") + where + "add it to dataset_info.d/ or run "
                        f"`llf-recipes register --file FILE --name {name} --stage {lf_stage} --data-dir {folder}`")
                    continue
                ranking = bool(entry.get("ranking", False))
                if lf_stage in RANKING_STAGES and not ranking:
                    add("ranking-mismatch", key, f"stage {lf_stage} needs paired data but entry {name!r} has no `ranking: true`",
                        "use a preference dataset" + _examples(datasets, lambda e: e.get("ranking")) + ", or register "
                        f"yours: `llf-recipes register --file FILE --name NAME --stage {lf_stage}`")
                elif lf_stage not in RANKING_STAGES and ranking:
                    add("ranking-mismatch", key, f"entry {name!r} is ranked (chosen/rejected) but stage {lf_stage} reads single answers",
                        "set stage: dpo (or rm) for this dataset, or use one with single answers"
                        + _examples(datasets, lambda e: not e.get("ranking") and "kto_tag" not in (e.get("columns") or {})))
                if lf_stage == "kto" and not (entry.get("columns") or {}).get("kto_tag"):
                    add("kto-needs-tag", key, f"stage kto needs a `kto_tag` column, entry {name!r} has none",
                        "use a KTO dataset whose columns map kto_tag to a boolean field"
                        + _examples(datasets, lambda e: (e.get("columns") or {}).get("kto_tag")))

    if lf_stage == "ppo" and verb == "train" and not config.get("reward_model"):
        add("ppo-needs-reward-model", "reward_model", "stage ppo needs a reward model",
            "set reward_model to a reward model's output dir (in a recipe: {{ stage_output('rm') }})")

    if config.get("deepspeed") and not launch.torchrun:
        add("deepspeed-needs-torchrun", "deepspeed", "DeepSpeed needs a distributed launch, which a single process without torchrun is not",
            "set FORCE_TORCHRUN=1 (llf-recipes run does this itself), or remove deepspeed")

    if config.get("neat_packing") and lf_stage != "sft":
        add("neat-packing-sft-only", "neat_packing", f"neat_packing only applies to stage sft, not {lf_stage}",
            "remove neat_packing")

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
    deepspeed_json: dict[str, Any] | DeepSpeedSource | None = None,
    allow: set[str] | frozenset[str] = frozenset(),
    base: Path | None = None,
    version: str = SUPPORTED_VERSION,
) -> list[Finding]:
    """Every finding for one config. `deepspeed_json` is the DeepSpeed config when the caller has it (a recipe's
    profile), else the `deepspeed` value is read (relative paths from `base`, the directory LLaMA-Factory starts in)."""
    launch = launch or LaunchInfo()
    findings = check_keys(config, verb, stage, version) + check_semantics(config, verb, stage, datasets or {}, launch)
    report = Collector(stage)
    known = keys_for(verb, version)
    settings = Settings({k: v for k, v in config.items() if k in known}, verb, version)
    ds = None
    if verb == "train" and (deepspeed_json is not None or config.get("deepspeed") is not None):
        ds = deepspeed_json if isinstance(deepspeed_json, DeepSpeedSource) else DeepSpeedSource(
            deepspeed_json if deepspeed_json is not None else config["deepspeed"], base)
    checks = [
        lambda: startup.check_model(settings, report),
        lambda: arguments.check_model_args(settings, report, base),
        lambda: arguments.check_data(settings, report),
        lambda: arguments.check_finetuning(settings, report),
    ]
    if verb == "train":
        checks += [
            lambda: startup.check_train(settings, launch, ds.zero_stage if ds else None, report, base),
            lambda: arguments.check_training_args(settings, report),
        ]
        if ds is not None:
            checks.append(lambda: deepspeed.check_deepspeed(settings, ds, launch.world_size, report))
    else:
        checks.append(lambda: startup.check_infer(settings, report))
    if version == SUPPORTED_VERSION:  # another engine's packages live in its own environment: `engine check`
        checks.append(lambda: packages.check_packages(settings, verb, launch, report))
    for check in checks:
        try:
            check()
        except (TypeError, ValueError, AttributeError):
            pass  # a value of the wrong kind breaks a cross-key rule; the type check above already names it
    seen = {(f.rule, f.key) for f in findings}
    findings += [f for f in report.findings if (f.rule, f.key) not in seen]
    return [
        Finding(f.rule, f.key, f.message, f.fix, f.stage, "warning") if f.rule in allow else f for f in findings
    ]


RULES = (
    "unknown-key", "wrong-type", "invalid-choice", "quantization-needs-adapter", "undefined-dataset",
    "ranking-mismatch", "kto-needs-tag", "ppo-needs-reward-model", "deepspeed-needs-torchrun",
    "neat-packing-sft-only", "pref-loss-fallback", "space-under-torchrun", "ppo-needs-old-trl", "dataset-dir-missing",
) + startup.RULES + arguments.RULES + deepspeed.RULES + packages.RULES

"""The GRPO stage document: backend-neutral settings, their defaults and checks, and the batch arithmetic.

A `verb: grpo` stage renders (through the same Renderer as every stage) to these keys. Both backends read them:
the EasyR1 bridge maps them onto EasyR1's config tree, the TRL backend onto GRPOConfig. Keys that only one engine
has go under `easyr1:` (dotted EasyR1 keys) or `trl:` (GRPOConfig fields).

Batch sizes count prompts, as EasyR1 does: `rollout_batch_size` prompts are sampled per step, each answered
`num_generations` times; the policy is updated on `global_batch_size` prompts at a time (so one rollout gives
rollout_batch_size / global_batch_size updates); `micro_batch_size` completions go through one device at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llf_recipes.errors import LlfError
from llf_recipes.grpo import rewards as reward_lib
from llf_recipes.schema.rules import Finding, _kind
from llf_recipes.suggest import nearest

BACKENDS = ("trl", "easyr1")  # "auto" (the default): trl on one node, easyr1 across nodes
FORMAT_PROMPTS = ("gsm8k", "gsm8k_zero_shot", "none")


@dataclass(frozen=True)
class Key:
    kinds: tuple[str, ...]
    default: Any
    help: str
    choices: tuple[Any, ...] = ()


REQUIRED = object()

KEYS: dict[str, Key] = {
    # model
    "model_name_or_path": Key(("str",), REQUIRED, "base model: a hub id or a local directory (a merged SFT model)"),
    "template": Key(("str", "null"), None, "LLaMA-Factory chat template, for `ask`/`chat`/`export` of the result"),
    "trust_remote_code": Key(("bool",), False, "let the model's own code run"),
    # method
    "stage": Key(("str",), "grpo", "always grpo", ("grpo",)),
    "do_train": Key(("bool",), True, "always true"),
    "finetuning_type": Key(("str",), "lora", "lora (an adapter) or full", ("lora", "full")),
    "lora_rank": Key(("int",), 16, "LoRA rank"),
    "lora_alpha": Key(("int",), 32, "LoRA alpha"),
    "lora_dropout": Key(("float", "int"), 0.05, "LoRA dropout (TRL; EasyR1 has none)"),
    "lora_target": Key(("str",), "all-linear", "all-linear, or comma-separated module names"),
    "learning_rate": Key(("float", "int"), 1.0e-5, "learning rate"),
    "beta": Key(("float", "int"), 0.0, "KL coefficient against the reference model; 0 loads no reference model"),
    # rollout
    "num_generations": Key(("int",), 4, "completions per prompt (the group); at least 2"),
    "temperature": Key(("float", "int"), 1.0, "sampling temperature of the rollouts"),
    "max_prompt_length": Key(("int",), 512, "prompt tokens kept"),
    "max_completion_length": Key(("int",), 256, "completion tokens generated"),
    # data
    "dataset": Key(("str",), REQUIRED, "a dataset entry (e.g. gsm8k_grpo) or a .jsonl file with prompt and answer"),
    "dataset_dir": Key(("str",), "data", "where the converted dataset files are (llf-recipes prepare writes them)"),
    "val_size": Key(("int", "float"), 0.05, "held-out rows for EasyR1's validation: a count, or a share below 1"),
    "format_prompt": Key(("str",), "gsm8k", "how EasyR1 wraps each question: gsm8k, gsm8k_zero_shot, none, or a .jinja file"),
    "rewards": Key(("list",), list(reward_lib.DEFAULT), "built-in names, module:function, or path/file.py:function"),
    # batch
    "rollout_batch_size": Key(("int",), 16, "prompts sampled per step"),
    "global_batch_size": Key(("int",), 16, "prompts per policy update; divides rollout_batch_size"),
    "micro_batch_size": Key(("int",), 4, "most completions one device takes per forward/backward"),
    "experience_micro_batch_size": Key(("int",), 16, "most completions one device scores per forward (EasyR1)"),
    # schedule and output
    "num_train_epochs": Key(("int", "float"), 1, "passes over the training prompts"),
    "max_steps": Key(("int", "null"), None, "stop after this many steps (overrides num_train_epochs)"),
    "save_steps": Key(("int",), 50, "checkpoint every N steps"),
    "logging_steps": Key(("int",), 1, "log every N steps"),
    "output_dir": Key(("str",), REQUIRED, "where the adapter (TRL) or the checkpoints (EasyR1) go"),
    "report_to": Key(("str", "list"), "none", "none, wandb, tensorboard, swanlab, mlflow"),
    "seed": Key(("int",), 42, "data order and sampling seed"),
    "bf16": Key(("bool",), False, "bf16 training (TRL)"),
    "fp16": Key(("bool",), False, "fp16 training (TRL)"),
    # engines
    "backend": Key(("str",), "auto", "trl (one node, also CPU), easyr1 (GPUs, one or many nodes), or auto",
                   ("auto", *BACKENDS)),
    "tensor_parallel_size": Key(("int",), 1, "vLLM tensor parallel size of EasyR1's rollout"),
    "gpu_memory_utilization": Key(("float",), 0.6, "share of GPU memory vLLM may take (EasyR1)"),
    "easyr1_python": Key(("str", "null"), None, "the interpreter of EasyR1's environment (--engine easyr1=PYTHON "
                         "wins; else $LLF_ENGINE_EASYR1, $LLF_EASYR1_PYTHON, engines.yaml, the installed engine, python3)"),
    "easyr1_dir": Key(("str", "null"), None, "a checkout of EasyR1 (else $LLF_EASYR1_DIR); `export` of full-parameter runs needs its scripts/"),
    "ray_port": Key(("int",), 6379, "Ray head port for multi-node EasyR1"),
    "easyr1": Key(("dict",), {}, "extra EasyR1 keys, dotted: {worker.actor.fsdp.torch_dtype: bf16}"),
    "trl": Key(("dict",), {}, "extra GRPOConfig fields: {loss_type: dr_grpo}"),
}


def resolved(config: dict[str, Any]) -> dict[str, Any]:
    """The stage's settings with every default filled in (required keys stay absent when missing)."""
    out = {k: (list(v.default) if isinstance(v.default, list) else dict(v.default) if isinstance(v.default, dict) else v.default)
           for k, v in KEYS.items() if v.default is not REQUIRED}
    out.update(config)
    if out.get("lora_target") == "all":  # LLaMA-Factory's spelling of PEFT's all-linear
        out["lora_target"] = "all-linear"
    return out


def check_keys(config: dict[str, Any], stage: str | None) -> list[Finding]:
    out: list[Finding] = []
    for key, value in config.items():
        spec = KEYS.get(key)
        if spec is None:
            guess = nearest(key, KEYS)
            out.append(Finding("unknown-key", key, "is not a GRPO stage setting",
                               f"did you mean `{guess}`?" if guess else
                               "engine-specific keys go under `easyr1:` (dotted EasyR1 keys) or `trl:` (GRPOConfig fields)", stage))
            continue
        kind = _kind(value)
        if kind not in spec.kinds:
            want = " or ".join(k for k in spec.kinds if k != "null")
            out.append(Finding("wrong-type", key, f"must be {want}, got {kind} {value!r}", f"write a {want} value", stage))
            continue
        if spec.choices and value not in spec.choices:
            guess = nearest(str(value), [str(c) for c in spec.choices])
            out.append(Finding("invalid-choice", key, f"{value!r} is not one of: {', '.join(map(str, spec.choices))}",
                               f"use {guess!r}" if guess else "choose one of the values listed", stage))
    for key, spec in KEYS.items():
        if spec.default is REQUIRED and key not in config:
            out.append(Finding("missing-key", key, "is required in a GRPO stage", f"add `{key}:` to the stage document", stage))
    return out


def check_rewards(names: list[Any], stage: str | None, base: str | None = None) -> list[Finding]:
    """Built-in names exist; `file.py:function` files exist. Importable modules are checked when the run starts."""
    out: list[Finding] = []
    if not names:
        out.append(Finding("grpo-reward", "rewards", "lists no reward function", f"e.g. rewards: {list(reward_lib.DEFAULT)}", stage))
    twice = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
    if twice:
        out.append(Finding("grpo-reward", "rewards", f"lists {', '.join(map(repr, twice))} more than once (each would "
                           "count twice in the reward)", "list each reward once", stage))
    for name in names:
        if not isinstance(name, str):
            out.append(Finding("grpo-reward", "rewards", f"{name!r} is not a reward name", "write names as strings", stage))
        elif not reward_lib.is_user_spec(name):
            if name not in reward_lib.BUILTIN:
                guess = nearest(name, reward_lib.BUILTIN)
                out.append(Finding("grpo-reward", "rewards", f"no built-in reward {name!r}",
                                   (f"did you mean {guess!r}? " if guess else "") +
                                   "name your own as module:function or path/to/file.py:function", stage))
        else:
            try:
                path = reward_lib.spec_file(name, base)
            except reward_lib.RewardSpecError as exc:
                out.append(Finding("grpo-reward", "rewards", str(exc), "write module:function or path/to/file.py:function", stage))
                continue
            if path is not None and not path.is_file():
                out.append(Finding("grpo-reward", "rewards", f"reward file {path} does not exist",
                                   "fix the path (relative paths are read from the directory you run llf-recipes in)", stage))
    return out


# ---------------------------------------------------------------- batch arithmetic


@dataclass(frozen=True)
class GrpoBatch:
    rollout_batch_size: int  # prompts per step
    global_batch_size: int  # prompts per update
    num_generations: int
    world_size: int
    micro_update: int  # completions per device per forward/backward
    micro_experience: int  # completions per device per scoring forward

    @property
    def per_device_update(self) -> int:
        """Completions each device sees per update."""
        return self.global_batch_size * self.num_generations // self.world_size

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.per_device_update // self.micro_update

    @property
    def steps_per_generation(self) -> int:
        """Micro-batches each device works through per rollout (TRL's steps_per_generation)."""
        return self.rollout_batch_size * self.num_generations // (self.world_size * self.micro_update)


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def plan_grpo_batch(rollout: int, global_batch: int, micro: int, n: int, world: int, micro_experience: int = 16,
                    where: str | None = None) -> GrpoBatch:
    """Split the batches over `world` devices so that EasyR1's start-up checks and TRL's GRPOConfig checks pass."""
    for key, value in (("rollout_batch_size", rollout), ("global_batch_size", global_batch), ("micro_batch_size", micro),
                       ("experience_micro_batch_size", micro_experience)):
        if value < 1:
            raise LlfError(f"{key}={value} must be positive", key=key, where=where)
    if n < 2:
        raise LlfError(f"num_generations={n}: GRPO compares a group of completions per prompt", key="num_generations",
                       where=where, fix="set num_generations to 2 or more (4 or 8 are common)")
    if rollout % global_batch:
        fits = [g for g in range(1, rollout + 1) if rollout % g == 0 and g * n % world == 0]
        raise LlfError(
            f"rollout_batch_size {rollout} is not a multiple of global_batch_size {global_batch}",
            key="rollout_batch_size", where=where,
            fix=f"each rollout is split into whole updates: use rollout_batch_size {global_batch * max(1, round(rollout / global_batch))}"
                + (f", or global_batch_size {fits[-1]}" if fits else ""))
    if global_batch * n % world:
        step = world // math.gcd(n, world)
        options = [step * k for k in range(1, 5)]
        raise LlfError(
            f"global_batch_size {global_batch} x num_generations {n} = {global_batch * n} completions per update do not "
            f"divide over {world} devices",
            key="global_batch_size", where=where,
            fix=f"use a global_batch_size that is a multiple of {step} (e.g. {', '.join(map(str, options))}) and divides "
                f"rollout_batch_size, or a layout whose device count divides {global_batch * n}")
    per_device = global_batch * n // world
    per_device_rollout = rollout * n // world
    return GrpoBatch(rollout, global_batch, n, world, _largest_divisor(per_device, micro),
                     _largest_divisor(per_device_rollout, micro_experience))


def batch_for(settings: dict[str, Any], world: int, where: str | None = None) -> GrpoBatch:
    return plan_grpo_batch(int(settings["rollout_batch_size"]), int(settings["global_batch_size"]),
                           int(settings["micro_batch_size"]), int(settings["num_generations"]), world,
                           int(settings["experience_micro_batch_size"]), where)

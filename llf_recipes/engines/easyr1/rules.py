"""EasyR1's start-up checks, made before launch: its config keys and value kinds (OmegaConf's), the batch and
micro-batch arithmetic that ray_trainer.py and fsdp_workers.py assert, the paths it would silently drop, and enough
training rows for one batch. Every message names the numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llf_recipes.engines.easyr1.config import SNAPSHOT_VERSION, flatten, is_local_path, keys
from llf_recipes.schema.rules import Finding, _kind
from llf_recipes.suggest import nearest


def check_keys(flat: dict[str, Any], stage: str | None) -> list[Finding]:
    """Keys and value kinds against the snapshot of EasyR1's dataclasses (what OmegaConf would reject at start-up)."""
    known = keys()
    out: list[Finding] = []
    for key, value in flat.items():
        spec = known.get(key)
        if spec is None:
            section = key.rpartition(".")[0]
            siblings = [k for k in known if k.rpartition(".")[0] == section]
            guess = nearest(key, siblings) or nearest(key, known)
            out.append(Finding("easyr1-unknown-key", key, f"is not an EasyR1 {SNAPSHOT_VERSION} config key (OmegaConf "
                               "raises ConfigKeyError at start-up)", f"did you mean `{guess}`?" if guess else
                               "see `python -m verl.trainer.main` config keys in EasyR1's verl/trainer/config.py", stage))
            continue
        if spec.get("auto"):
            out.append(Finding("easyr1-auto-key", key, "is computed by EasyR1 itself; a value set here is overwritten",
                               f"remove `{key}`", stage))
            continue
        kinds = spec["kinds"]
        kind = _kind(value)
        if "any" not in kinds and kind not in kinds:
            want = " or ".join(k for k in kinds if k != "null") or "null"
            out.append(Finding("easyr1-wrong-type", key, f"must be {want}, got {kind} {value!r} (OmegaConf raises "
                               "ValidationError at start-up)", f"write a {want} value", stage))
            continue
        choices = spec.get("choices")
        if choices and value is not None:
            for item in value if isinstance(value, list) else [value]:
                if item not in choices:
                    guess = nearest(str(item), choices)
                    out.append(Finding("easyr1-invalid-choice", key, f"{item!r} is not one of: {', '.join(choices)}",
                                       f"use {guess!r}" if guess else "choose one of the values listed", stage))
    return out


def _get(flat: dict[str, Any], key: str) -> Any:
    return flat[key] if key in flat else keys()[key]["default"]


def check_batches(flat: dict[str, Any], stage: str | None) -> list[Finding]:
    """EasyR1's start-up checks (ray_trainer.py, fsdp_workers.py), reproduced so they fail here, not after Ray starts."""
    out: list[Finding] = []
    try:
        rollout = int(_get(flat, "data.rollout_batch_size"))
        gbs = int(_get(flat, "worker.actor.global_batch_size"))
        n = int(_get(flat, "worker.rollout.n"))
        exp = int(_get(flat, "worker.actor.micro_batch_size_per_device_for_experience"))
        upd = int(_get(flat, "worker.actor.micro_batch_size_per_device_for_update"))
        world = int(_get(flat, "trainer.nnodes")) * int(_get(flat, "trainer.n_gpus_per_node"))
        tp = int(_get(flat, "worker.rollout.tensor_parallel_size"))
        ulysses = int(_get(flat, "worker.actor.ulysses_size"))
    except (TypeError, ValueError):
        return out  # a wrong type is reported by check_keys

    def add(key: str, message: str, fix: str) -> None:
        out.append(Finding("easyr1-batch", key, message, fix, stage))

    if min(rollout, gbs, n, exp, upd, world, tp, ulysses) < 1:
        add("data.rollout_batch_size", "batch sizes, rollout.n, device counts and parallel sizes must be positive",
            "use positive values")
        return out
    if rollout % gbs:
        add("data.rollout_batch_size", f"rollout_batch_size {rollout} is not divisible by worker.actor.global_batch_size {gbs}",
            f"make rollout_batch_size a multiple of {gbs} (e.g. {gbs * max(1, rollout // gbs)}), or set global_batch_size to a divisor of {rollout}")
    if rollout * n % exp:
        add("worker.actor.micro_batch_size_per_device_for_experience",
            f"rollout_batch_size x rollout.n = {rollout * n} is not divisible by {exp}",
            f"use a micro batch for experience that divides {rollout * n} (e.g. {max(d for d in range(1, exp + 1) if rollout * n % d == 0)})")
    if n < 2 and _get(flat, "algorithm.adv_estimator") in ("grpo", "rloo"):
        add("worker.rollout.n", f"rollout.n is {n}: GRPO needs a group of completions per prompt", "set num_generations to 2 or more")
    per_device = gbs * max(n, 1) // max(world // ulysses, 1)
    if per_device == 0:
        add("worker.actor.global_batch_size",
            f"global_batch_size {gbs} x rollout.n {n} = {gbs * n} completions cannot cover {world} devices",
            f"raise global_batch_size to at least {-(-world // n)}")
    elif per_device % upd:
        add("worker.actor.micro_batch_size_per_device_for_update",
            f"{per_device} completions per device per update are not divisible by the micro batch {upd}",
            f"use a micro batch that divides {per_device} (e.g. {max(d for d in range(1, upd + 1) if per_device % d == 0)})")
    elif _get(flat, "worker.actor.fsdp.enable_cpu_offload") and per_device != upd:
        add("worker.actor.fsdp.enable_cpu_offload", "FSDP CPU offload does not work with gradient accumulation",
            f"set micro_batch_size to {per_device}, or turn enable_cpu_offload off")
    if world % tp:
        add("worker.rollout.tensor_parallel_size", f"{world} devices are not divisible by tensor_parallel_size {tp}",
            f"use a tensor_parallel_size that divides {world} (e.g. 1)")
    if rollout % world:  # DataProto.chunk: "only support equal chunk"
        add("data.rollout_batch_size", f"rollout_batch_size {rollout} prompts do not split evenly over {world} devices "
            f"(EasyR1: \"only support equal chunk. Got size of DataProto {rollout} and chunk {world}\")",
            f"use a rollout_batch_size that is a multiple of {world} (e.g. {world * max(1, -(-rollout // world))})")
    _more_batch_checks(flat, rollout, n, world, add)
    return out


def _more_batch_checks(flat: dict[str, Any], rollout: int, n: int, world: int, add) -> None:
    """The rest of EasyR1's start-up checks: the critic's batches (GAE), vLLM's token budget, the checkpoint path."""
    prompt, response = _get(flat, "data.max_prompt_length"), _get(flat, "data.max_response_length")
    budget = _get(flat, "worker.rollout.max_num_batched_tokens")
    if all(isinstance(v, int) for v in (prompt, response, budget)) and budget < prompt + response:
        add("worker.rollout.max_num_batched_tokens",
            f"max_num_batched_tokens {budget} is below max_prompt_length {prompt} + max_response_length {response} "
            f"= {prompt + response} (vLLM rollout refuses to start)",
            f"set worker.rollout.max_num_batched_tokens to at least {prompt + response}")
    load = _get(flat, "trainer.load_checkpoint_path")
    if isinstance(load, str) and load and not Path(load.rstrip("/")).name.startswith("global_step_"):
        add("trainer.load_checkpoint_path", f"{load} does not end with global_step_N (EasyR1 refuses it)",
            "point it at a checkpoint directory such as .../checkpoints/global_step_100")
    if _get(flat, "algorithm.adv_estimator") == "gae":
        try:
            gbs = int(_get(flat, "worker.critic.global_batch_size"))
            exp = int(_get(flat, "worker.critic.micro_batch_size_per_device_for_experience"))
            upd = int(_get(flat, "worker.critic.micro_batch_size_per_device_for_update"))
        except (KeyError, TypeError, ValueError):
            return
        if min(gbs, exp, upd) < 1:
            return
        if rollout % gbs:
            add("worker.critic.global_batch_size",
                f"rollout_batch_size {rollout} is not divisible by the critic's global_batch_size {gbs}",
                f"use a critic global_batch_size that divides {rollout}")
        if rollout * n % exp:
            add("worker.critic.micro_batch_size_per_device_for_experience",
                f"rollout_batch_size x rollout.n = {rollout * n} is not divisible by the critic's micro batch {exp}",
                f"use a critic micro batch for experience that divides {rollout * n}")
        per_device = gbs * max(1, n) // max(world, 1)
        if per_device == 0:
            add("worker.critic.global_batch_size", f"the critic's global_batch_size {gbs} x rollout.n {n} cannot cover "
                f"{world} devices", f"raise it to at least {-(-world // max(n, 1))}")
        elif per_device % upd:
            add("worker.critic.micro_batch_size_per_device_for_update", f"{per_device} completions per device per "
                f"critic update are not divisible by the critic's micro batch {upd}",
                f"use a critic micro batch that divides {per_device}")


def _strip_suffix(key: str, value: str) -> str:
    if key.startswith("data.") and key.endswith("_files"):
        return value.split("@", 1)[0]
    if key == "worker.reward.reward_function":
        return value.rsplit(":", 1)[0] if value.rsplit(":", 1)[-1].isidentifier() else value
    return value


PATH_KEYS = ("data.train_files", "data.val_files", "data.format_prompt", "data.override_chat_template", "data.image_dir",
             "worker.reward.reward_function", "worker.actor.model.model_path", "trainer.load_checkpoint_path")


def check_paths(flat: dict[str, Any], stage: str | None, planned: set[Path] = frozenset()) -> list[Finding]:
    """EasyR1 silently drops a missing format_prompt or reward path (it fails much later, or never): check them here.
    `planned` holds paths this run writes (or an earlier stage produces) before EasyR1 starts."""
    out: list[Finding] = []
    planned_abs = {Path(p).resolve() for p in planned}
    for key in PATH_KEYS:
        value = flat.get(key)
        if not isinstance(value, str) or not value:
            continue
        raw = _strip_suffix(key, value)
        if key == "worker.actor.model.model_path" and not is_local_path(raw):
            continue  # a hub id: EasyR1 downloads it
        if key in ("data.train_files", "data.val_files") and not is_local_path(raw):
            continue  # a hub dataset id
        path = Path(raw).expanduser()
        if path.exists() or path.resolve() in planned_abs:
            continue
        fix = {"worker.reward.reward_function": "write the reward module first (llf-recipes run does), or fix the path",
               "data.format_prompt": "fix the path: EasyR1 would silently train without the prompt template",
               "worker.actor.model.model_path": "run the stage that produces the model first, or fix model_name_or_path"}
        out.append(Finding("easyr1-missing-path", key, f"{raw} does not exist",
                           fix.get(key, "create it, or fix the path; files must exist at this path on every node"), stage))
    return out


def count_rows(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def check_rows(flat: dict[str, Any], stage: str | None, train_rows: int | None = None) -> list[Finding]:
    """EasyR1 drops the last partial batch: fewer training rows than rollout_batch_size means zero steps."""
    rollout = flat.get("data.rollout_batch_size")
    if train_rows is None:
        train = flat.get("data.train_files")
        path = Path(_strip_suffix("data.train_files", train)) if isinstance(train, str) else None
        if path is None or not path.is_file():
            return []
        train_rows = count_rows(path)
    if isinstance(rollout, int) and train_rows < rollout:
        return [Finding("easyr1-too-few-rows", "data.rollout_batch_size",
                        f"the training set has {train_rows} row(s), fewer than rollout_batch_size {rollout}: EasyR1 "
                        "would build no batch", f"use rollout_batch_size <= {train_rows} (and a global_batch_size that "
                        "divides it), a smaller val_size, or more data", stage)]
    return []


def validate(config: dict[str, Any], stage: str | None = None, planned: set[Path] = frozenset(),
             train_rows: int | None = None) -> list[Finding]:
    flat = flatten(config)
    return check_keys(flat, stage) + check_batches(flat, stage) + check_paths(flat, stage, planned) + \
        check_rows(flat, stage, train_rows)

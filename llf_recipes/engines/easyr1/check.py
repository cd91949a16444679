"""Load EasyR1 configs through EasyR1's own structured config classes, as `python -m verl.trainer.main` does.

    EASYR1_PYTHON llf_recipes/engines/easyr1/check.py EASYR1_CHECKOUT CONFIG.yaml [CONFIG.yaml ...]

Run it with EasyR1's interpreter: it needs only what EasyR1's config modules import (omegaconf<2.4, numpy, pyyaml,
codetiming, packaging), not torch or vllm, because the packages around the config modules are stood in for by
empty ones (their __init__ files import the trainer, the rollout and vllm). Prints one JSON line per config; exits
1 when any config fails. Standard library + omegaconf only: this file never imports llf_recipes.
"""

import importlib
import json
import sys
import types
from pathlib import Path

PACKAGES = ("verl", "verl.utils", "verl.trainer", "verl.workers", "verl.workers.actor", "verl.workers.critic",
            "verl.workers.reward", "verl.workers.rollout")
WORKER_CONFIGS = ("actor", "critic", "reward", "rollout")


def config_classes(checkout: Path):
    """EasyR1's PPOConfig, from the checkout's verl/trainer/config.py, with its own imports."""
    for name in PACKAGES:
        package = types.ModuleType(name)
        package.__path__ = [str(checkout.joinpath(*name.split(".")))]
        sys.modules[name] = package
    for sub in WORKER_CONFIGS:
        module = importlib.import_module(f"verl.workers.{sub}.config")
        # What the real verl/workers/<sub>/__init__.py re-exports, for `from .actor import ActorConfig`.
        for attr, value in vars(module).items():
            if not attr.startswith("_"):
                setattr(sys.modules[f"verl.workers.{sub}"], attr, value)
    return importlib.import_module("verl.trainer.config").PPOConfig


def load(ppo_config, path: str):
    from omegaconf import OmegaConf

    # verl/trainer/main.py: structured defaults, merged with the file, converted to the dataclass, post-inited.
    merged = OmegaConf.merge(OmegaConf.structured(ppo_config()), OmegaConf.load(path))
    config = OmegaConf.to_object(merged)
    config.deep_post_init()
    return config


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    ppo_config = config_classes(Path(argv[0]).resolve())
    failed = 0
    for path in argv[1:]:
        try:
            config = load(ppo_config, path)
        except Exception as exc:  # noqa: BLE001 - report any OmegaConf/EasyR1 error per file
            failed += 1
            print(json.dumps({"config": path, "ok": False, "error": f"{type(exc).__name__}: {exc}"}))
            continue
        print(json.dumps({
            "config": path, "ok": True,
            "train_files": config.data.train_files, "format_prompt": config.data.format_prompt,
            "reward_function": config.worker.reward.reward_function,
            "reward_function_name": config.worker.reward.reward_function_name,
            "model_path": config.worker.actor.model.model_path, "lora_rank": config.worker.actor.model.lora.rank,
            "nnodes": config.trainer.nnodes, "n_gpus_per_node": config.trainer.n_gpus_per_node,
            "rollout_batch_size": config.data.rollout_batch_size, "global_batch_size": config.worker.actor.global_batch_size,
            "n": config.worker.rollout.n, "logger": list(config.trainer.logger),
        }))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The TRL backend: `python -m llf_recipes.engines.trl.backend CONFIG` trains one GRPO stage with TRL's GRPOTrainer.

CONFIG is the YAML `llf-recipes run` writes (the stage's settings plus the GRPOConfig and LoRA arguments). The
result in output_dir is a PEFT adapter (adapter_config.json + adapter_model.safetensors) with the tokenizer, so
`llamafactory-cli chat/export` load it with `adapter_name_or_path`, plus trainer_state.json (the per-step rewards)
and all_results.json.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from llf_recipes import yamlio
from llf_recipes.errors import LlfError
from llf_recipes.grpo import rewards as reward_lib


def apply_compat() -> None:
    """trl 0.24 with transformers 5, in one place:

    1. trl computes its optional-package flags with transformers' `_is_package_available`, which in transformers 5
       returns an (available, version) tuple even without return_version: every flag is truthy, so
       `from trl import GRPOTrainer` tries to import mergekit (and others). Turn the tuples back into booleans.
    2. GRPOTrainer.__init__ writes `model.warnings_issued[...]`, an attribute transformers 5 removed; `ensure_warnings_issued`
       gives the model an empty dict before the trainer is built.
    """
    import trl.import_utils as flags

    for name, value in list(vars(flags).items()):
        if name.startswith("_") and name.endswith("_available") and isinstance(value, tuple):
            setattr(flags, name, bool(value[0]))


def ensure_warnings_issued(model) -> None:
    if not hasattr(model, "warnings_issued"):
        model.warnings_issued = {}


def completion_text(completion: Any) -> str:
    """TRL passes conversational completions as [{"role": "assistant", "content": ...}], plain ones as strings."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def trl_reward(name: str, fn, tag: str | None = None) -> Any:
    """Adapt a `reward(response, answer, **row)` function to TRL's `f(prompts, completions, **columns)`."""

    def reward(prompts=None, completions=None, answer=None, **columns) -> list[float]:
        texts = [completion_text(c) for c in completions]
        answers = answer if answer is not None else [None] * len(texts)
        rows = [{k: v[i] for k, v in columns.items() if isinstance(v, list) and len(v) == len(texts) and k != "completion_ids"}
                for i in range(len(texts))]
        return [float(fn(t, a, **row)) for t, a, row in zip(texts, answers, rows)]

    reward.__name__ = tag or reward_lib.label(name)  # TRL logs rewards/<name>/mean under this name
    return reward


def load_rows(path: str):
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=path, split="train")
    for column in ("prompt", "answer"):
        if column not in dataset.column_names:
            raise LlfError(f"{path} has no `{column}` column (columns: {', '.join(dataset.column_names)})",
                           fix="convert the source with `llf-recipes convert NAME --kind gsm8k_grpo`")
    return dataset


def train(config: dict[str, Any]) -> dict[str, Any]:
    apply_compat()
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    model_path = config["model_name_or_path"]
    try:
        tags = reward_lib.labels(list(config["rewards"]))
        functions = [trl_reward(n, reward_lib.load(n, Path.cwd()), tags[n]) for n in config["rewards"]]
    except (reward_lib.RewardSpecError, ImportError) as exc:
        raise LlfError(str(exc), key="rewards", fix="name built-in rewards, module:function or path/file.py:function") from None
    dataset = load_rows(config["data_file"])
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=config.get("trust_remote_code", False))
    if isinstance(dataset[0]["prompt"], list) and not tokenizer.chat_template:
        # TRL only fails once train() starts; say it now, with the model named.
        raise LlfError(f"{model_path} has no chat template, and the prompts are chat messages",
                       key="model_name_or_path", fix="use an instruct/chat model, or a tokenizer with a chat_template")
    kwargs = dict(config["grpo_config"])
    kwargs.setdefault("use_cpu", not torch.cuda.is_available())
    try:
        args = GRPOConfig(**kwargs)
    except TypeError as exc:
        raise LlfError(f"GRPOConfig rejected the arguments: {exc}", key="trl",
                       fix="check the names under `trl:` against trl's GRPOConfig") from None
    except ValueError as exc:
        raise LlfError(f"GRPOConfig: {exc}", key="trl") from None
    model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=config.get("trust_remote_code", False))
    ensure_warnings_issued(model)
    lora = config.get("lora_config")
    trainer = GRPOTrainer(model=model, reward_funcs=functions, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=LoraConfig(**lora) if lora else None,
                          callbacks=[progress_log()])
    result = trainer.train(resume_from_checkpoint=config.get("resume_from_checkpoint") or None)
    trainer.save_model(args.output_dir)  # the adapter (or the full model) in output_dir itself
    tokenizer.save_pretrained(args.output_dir)
    trainer.save_state()
    metrics = dict(result.metrics)
    trainer.save_metrics("train", metrics)
    return metrics


def progress_log():
    """A callback appending LLaMA-Factory's trainer_log.jsonl lines (current_steps, total_steps, loss, lr, reward), so
    `llf-recipes run` shows a TRL stage's progress as it shows LLaMA-Factory's."""
    import json
    import time

    from transformers import TrainerCallback

    class ProgressLog(TrainerCallback):
        started = time.time()

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "loss" not in logs:  # not the end-of-training summary
                return
            elapsed = time.time() - self.started
            step, total = state.global_step, state.max_steps
            left = elapsed / step * (total - step) if step else 0.0
            entry = {"current_steps": step, "total_steps": total, "loss": logs.get("loss"),
                     "lr": logs.get("learning_rate"), "reward": logs.get("reward"),
                     "elapsed_time": _clock(elapsed), "remaining_time": _clock(left)}
            with open(Path(args.output_dir) / "trainer_log.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps({k: v for k, v in entry.items() if v is not None}) + "\n")

    return ProgressLog()


def _clock(seconds: float) -> str:
    from datetime import timedelta

    return str(timedelta(seconds=int(seconds)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m llf_recipes.engines.trl.backend CONFIG.yaml", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        config = yamlio.load(path.read_text(encoding="utf-8"), where=str(path))
        metrics = train(config)
    except LlfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"GRPO finished: {', '.join(f'{k}={v:.4g}' for k, v in metrics.items() if isinstance(v, (int, float)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

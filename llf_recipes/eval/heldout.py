"""The rows a run is tested on, read and tokenized by LLaMA-Factory's own data code.

A run's own held-out rows are the ones its trainer evaluated on: `eval_dataset` when the config names one, else the
`val_size` split of `dataset`, reproduced with the run's seed and `max_samples` (LLaMA-Factory samples, then splits).
Named datasets (`eval --dataset`) are used whole: every row once, concatenated, whatever weights the run mixed its
training data with (its `interleave_probs` fit its own dataset list, not the named one). Rows become token ids through the same dataset processors training
used (template, cutoff, masks), so a test loss here is the loss the trainer would report.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError

# DataArguments keys that change which rows are read or how they are encoded.
DATA_KEYS = ("template", "cutoff_len", "train_on_prompt", "mask_history", "mix_strategy", "interleave_probs",
             "tool_format", "default_system", "enable_thinking", "media_dir")


@dataclass
class HeldOut:
    """Aligned rows (LLaMA-Factory's `_prompt`, `_response`, `_system`, `_tools`, media) and what they are.

    kind: pairs (chosen, rejected), sft (one answer), text (pre-training text) or prompts (no answer).
    """

    kind: str
    rows: list[dict[str, Any]]
    source: str

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "rows": len(self.rows)}


def data_dir_of(config: dict[str, Any], data: dict[str, Any], override: str | Path | None, *, own: bool = False) -> str:
    """Where datasets are registered. Named datasets: `override` (--data-dir) when given. The run's own datasets:
    its dataset_dir (relative ones are read from where the run was launched, the manifest's cwd), unless that has
    no dataset_info.json any more and `override` is given."""
    path = Path(str(config.get("dataset_dir") or "data"))
    if not path.is_absolute() and data.get("cwd"):
        path = Path(data["cwd"]) / path
    if override and (not own or not (path / "dataset_info.json").is_file()):
        return str(Path(override))
    return str(path)


def run_heldout(config: dict[str, Any], data: dict[str, Any], data_dir: str | Path | None, limit: int | None) -> HeldOut | None:
    """The rows the run's trainer held out, or None when it held none out."""
    stage = config.get("stage", "sft")
    seed = int(config.get("seed", 42))
    directory = data_dir_of(config, data, data_dir, own=True)
    if config.get("eval_dataset"):
        names = _names(config["eval_dataset"])
        rows = _load(names, directory, config, stage, seed, val_size=0.0, max_samples=config.get("max_samples"))
        source = f"{','.join(names)} (eval_dataset)"
    elif float(config.get("val_size") or 0) > 0 and config.get("dataset"):
        names = _names(config["dataset"])
        val_size = float(config["val_size"])
        rows = _load(names, directory, config, stage, seed, val_size=val_size, max_samples=config.get("max_samples"))
        source = f"{','.join(names)} (val_size {config['val_size']:g} split, seed {seed})"
    else:
        return None
    return _shape(rows[:limit] if limit else rows, stage, source)


def named_heldout(names: list[str], config: dict[str, Any], data: dict[str, Any], data_dir: str | Path | None,
                  limit: int | None) -> HeldOut:
    """Every row of the named datasets (up to `limit`): one test set shared by every run."""
    directory = data_dir_of(config, data, data_dir)
    ranking = _ranking(names, directory)
    stage = "dpo" if ranking else "sft"
    rows = _load(names, directory, config, stage, int(config.get("seed", 42)), val_size=0.0,
                 max_samples=limit or None, whole=True)
    return _shape(rows, stage, f"{','.join(names)} (all rows)")


def _names(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _ranking(names: list[str], directory: str) -> bool:
    from llamafactory.data.parser import get_dataset_list

    try:
        attrs = get_dataset_list(names, directory)
    except ValueError as exc:
        raise LlfError(str(exc), where=f"{directory}/dataset_info.json",
                       fix="register the dataset (llf-recipes register NAME --data-dir DIR) or pass --data-dir") from None
    kinds = {bool(a.ranking) for a in attrs}
    if len(kinds) > 1:
        raise LlfError(f"{', '.join(names)} mix preference and single-answer datasets",
                       fix="name datasets of one kind together")
    return kinds.pop()


def data_args(config: dict[str, Any], directory: str, **changes: Any):
    from llamafactory.hparams import DataArguments

    known = {k: config[k] for k in DATA_KEYS if config.get(k) is not None}
    return DataArguments(dataset_dir=directory, packing=False, neat_packing=False, **{**known, **changes})


def _load(names: list[str], directory: str, config: dict[str, Any], stage: str, seed: int, *, val_size: float,
          max_samples: int | None, whole: bool = False) -> list[dict[str, Any]]:
    from llamafactory.data.data_utils import split_dataset
    from llamafactory.data.loader import _get_merged_dataset  # loading + aligning, exactly as training does it
    from llamafactory.hparams import ModelArguments

    if not Path(directory, "dataset_info.json").is_file():
        raise LlfError(f"no dataset_info.json in {directory}", key="dataset_dir",
                       fix="pass --data-dir DIR (where the run's datasets are registered)")
    mixing = {"mix_strategy": "concat", "interleave_probs": None} if whole else {}
    args = data_args(config, directory, dataset=",".join(names), val_size=val_size, max_samples=max_samples, **mixing)
    model_args = ModelArguments(model_name_or_path=str(config.get("model_name_or_path") or "unused"))
    # What the loader reads of the training arguments; the full dataclass would set up devices for nothing.
    training = types.SimpleNamespace(seed=seed, local_process_index=0, dataloader_num_workers=0)
    loader_stage = "rm" if stage in ("rm", "dpo") else "sft"
    try:
        dataset = _get_merged_dataset(args.dataset, model_args, args, training, loader_stage)
    except ValueError as exc:
        raise LlfError(f"LLaMA-Factory cannot read {', '.join(names)}: {exc}", where=f"{directory}/dataset_info.json",
                       fix="check the entry with llf-recipes check NAME --stage STAGE --data-dir DIR") from None
    if val_size > 0:
        _, held = split_dataset(dataset, None, args, seed=seed)
        dataset = held["validation"]
    return dataset.to_list()


def _shape(rows: list[dict[str, Any]], stage: str, source: str) -> HeldOut:
    """Classify rows; KTO rows keep only their desirable answers (the undesirable ones are not targets)."""
    if stage == "pt":
        return HeldOut("text", [r for r in rows if r["_prompt"]], source)
    if stage in ("rm", "dpo"):
        return HeldOut("pairs", [r for r in rows if len(r["_response"]) == 2], source)
    kept = []
    for row in rows:
        response = row["_response"]
        if len(response) == 2:  # KTO: the empty slot marks the tag, first filled = desirable
            if response[0]["content"] and not response[1]["content"]:
                kept.append({**row, "_response": response[:1]})
        elif len(response) == 1 and response[0]["content"]:
            kept.append(row)
    if stage == "ppo" or not kept:
        return HeldOut("prompts", [{**r, "_response": []} for r in rows if r["_prompt"]], source)
    return HeldOut("sft", kept, source)


def encode(held: HeldOut, template, tokenizer, args) -> dict[str, list[list[int]]]:
    """Token ids and labels through LLaMA-Factory's processor for the kind (prompt tokens masked with -100)."""
    from llamafactory.data.processor import (
        PairwiseDatasetProcessor,
        PretrainDatasetProcessor,
        SupervisedDatasetProcessor,
    )

    if held.kind == "prompts" or not held.rows:
        return {}
    processor_class = {"pairs": PairwiseDatasetProcessor, "sft": SupervisedDatasetProcessor,
                       "text": PretrainDatasetProcessor}[held.kind]
    processor = processor_class(template=template, tokenizer=tokenizer, processor=None, data_args=args)
    batch = {key: [row.get(key) for row in held.rows] for key in held.rows[0]}
    out = processor.preprocess_dataset(batch)
    if held.kind == "text":
        return {"input_ids": out["input_ids"], "labels": [list(ids) for ids in out["input_ids"]]}
    return dict(out)


def training_rows(config: dict[str, Any], data: dict[str, Any], data_dir: str | Path | None, limit: int) -> HeldOut:
    """The first rows of the training data: prompts for samples when nothing was held out."""
    names = _names(config["dataset"])
    stage = config.get("stage", "sft")
    rows = _load(names, data_dir_of(config, data, data_dir, own=True), config, stage, int(config.get("seed", 42)), val_size=0.0,
                 max_samples=limit)
    return _shape(rows, stage, f"{','.join(names)} (first training rows)")

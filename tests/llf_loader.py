"""How many rows LLaMA-Factory's own dataset code reads: `get_dataset` (converter, stage processor and all) in-process."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace


def loaded_rows(model: Path, data_dir: Path, name: str, stage: str, work: Path, *, media: bool = False) -> int:
    """Rows of `name` that LLaMA-Factory 0.9.5 tokenizes for `stage` (dpo reads through the rm processor), no packing.

    Media rows go through LLaMA-Factory's llava plugin given image, video and audio tokens, with token expansion off:
    it then validates each media count against the <image>/<video>/<audio> placeholders, as it does for any multimodal
    model, without needing a vision model.
    """
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.data.mm_plugin import get_mm_plugin
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = {"model_name_or_path": str(model), "stage": "rm" if stage == "dpo" else stage, "do_train": True,
            "finetuning_type": "lora", "dataset": name, "dataset_dir": str(data_dir),
            "template": "qwen", "cutoff_len": 256, "output_dir": str(work / "out"),
            "overwrite_cache": True, "report_to": "none", "packing": False, "cache_dir": str(work / "cache")}
    if stage == "ppo":  # its argument checks want a reward model; the data path never loads it
        args.update(reward_model=str(model), reward_model_type="full")
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    processor = tokenizer_module["processor"]
    if media:
        plugin = get_mm_plugin("llava", image_token="<image>", video_token="<video>", audio_token="<audio>",
                               expand_mm_tokens=False)
        template = replace(template, mm_plugin=plugin)  # a copy: LLaMA-Factory's templates are shared objects
        processor = SimpleNamespace(image_processor=object(), feature_extractor=object())
    module = get_dataset(template, model_args, data_args, training_args, args["stage"],
                         tokenizer=tokenizer_module["tokenizer"], processor=processor)
    return len(module["train_dataset"])


def aligned_rows(data_dir: Path, name: str, stage: str, work: Path, **extra) -> list[dict]:
    """LLaMA-Factory's converter output for `name` (its _prompt, _response, _system, _tools, and _images when the
    entry has media), before tokenizing; `extra` are more training arguments (e.g. media_dir)."""
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    from llamafactory.data.loader import _get_merged_dataset
    from llamafactory.hparams import get_train_args

    args = {"model_name_or_path": "unused", "stage": "rm" if stage == "dpo" else stage, "do_train": True,
            "finetuning_type": "lora", "dataset": name, "dataset_dir": str(data_dir), "template": "qwen",
            "output_dir": str(work / "out"), "overwrite_cache": True, "report_to": "none", "cache_dir": str(work / "cache"),
            **extra}
    model_args, data_args, training_args, _, _ = get_train_args(args)
    dataset = _get_merged_dataset([name], model_args, data_args, training_args, args["stage"])
    keys = ("_prompt", "_response", "_system", "_tools", "_images")
    return [{k: row[k] for k in keys if k in row} for row in dataset]

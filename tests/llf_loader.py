"""How many rows LLaMA-Factory's own dataset code reads: `get_dataset` (converter, stage processor and all) in-process."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace


def loaded_rows(model: Path, data_dir: Path, name: str, stage: str, work: Path, *, images: bool = False) -> int:
    """Rows of `name` that LLaMA-Factory 0.9.5 tokenizes for `stage` (dpo reads through the rm processor), no packing.

    Media rows go through the llava template's plugin with token expansion off: LLaMA-Factory then validates the
    image count against the <image> placeholders, as it does for any multimodal model, without needing a vision model.
    """
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = {"model_name_or_path": str(model), "stage": "rm" if stage == "dpo" else stage, "do_train": True,
            "finetuning_type": "lora", "dataset": name, "dataset_dir": str(data_dir),
            "template": "llava" if images else "qwen", "cutoff_len": 256, "output_dir": str(work / "out"),
            "overwrite_cache": True, "report_to": "none", "packing": False, "cache_dir": str(work / "cache")}
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    processor = tokenizer_module["processor"]
    if images:
        template.mm_plugin.expand_mm_tokens = False
        processor = SimpleNamespace(image_processor=object())
    module = get_dataset(template, model_args, data_args, training_args, args["stage"],
                         tokenizer=tokenizer_module["tokenizer"], processor=processor)
    return len(module["train_dataset"])

"""`score --reward-model RUN`: every generated answer scored by a reward model the `rm` stage trained.

The model is loaded by LLaMA-Factory's own `load_model(..., add_valuehead=True)` (the base, the run's adapter chain,
the value head saved beside the last adapter), and each prompt + answer is encoded by LLaMA-Factory's pairwise
processor with the run's template and cutoff_len, exactly as the rm trainer encodes a chosen answer. The score is
the value head's output at the last token, which is what the trainer compares between chosen and rejected.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError


def check_reward_run(run_dir: Path, data: dict[str, Any]) -> None:
    model = data.get("model") or {}
    head = Path(str((model.get("adapters") or [model.get("base") or run_dir])[-1]))
    if model.get("stage") != "rm" or not any((head / n).is_file() for n in ("value_head.safetensors", "value_head.bin")):
        raise LlfError(f"{run_dir} is not a reward model: no value head from an rm stage in {head}",
                       key="--reward-model", fix="pass the output directory of a recipe's rm stage "
                                                 "(e.g. saves/rlhf-ultrafeedback/rm)")


def load(run_dir: Path, data: dict[str, Any], device: str = "cpu"):
    """(model with value head, tokenizer, template, data arguments) through LLaMA-Factory's loaders."""
    from llamafactory.hparams import DataArguments, FinetuningArguments, ModelArguments
    from llamafactory.model import load_model, load_tokenizer

    from llf_recipes.engines.lf_templates import template_for
    from llf_recipes.use import infer_config

    check_reward_run(run_dir, data)
    config = infer_config(run_dir, data)
    run_config = data.get("config") or {}
    model_args = ModelArguments(model_name_or_path=config["model_name_or_path"],
                                adapter_name_or_path=config.get("adapter_name_or_path"), trust_remote_code=True)
    finetuning_args = FinetuningArguments(stage="rm", finetuning_type=config.get("finetuning_type", "lora"))
    data_args = DataArguments(template=config.get("template"), cutoff_len=int(run_config.get("cutoff_len") or 2048))
    tokenizer_module = load_tokenizer(model_args)
    template = template_for(tokenizer_module["tokenizer"], data_args)
    model = load_model(tokenizer_module["tokenizer"], model_args, finetuning_args, is_trainable=False,
                       add_valuehead=True)
    model.to(device).eval()
    return model, tokenizer_module["tokenizer"], template, data_args


def encode(tokenizer, template, data_args, row: dict[str, Any], answer: str) -> list[int]:
    """prompt + answer token ids as the rm trainer builds a chosen sequence."""
    from llamafactory.data.processor import PairwiseDatasetProcessor

    processor = PairwiseDatasetProcessor(template=template, tokenizer=tokenizer, processor=None, data_args=data_args)
    reply = {"role": "assistant", "content": answer}
    batch = {"_prompt": [row["prompt"]], "_response": [[reply, reply]], "_system": [row.get("system") or ""],
             "_tools": [""], "_images": [None], "_videos": [None], "_audios": [None]}
    out = processor.preprocess_dataset(batch)
    if not out.get("chosen_input_ids"):
        raise LlfError(f"row {row.get('index')}: the prompt is not a user turn followed by an answer slot")
    return out["chosen_input_ids"][0]


def score_rows(run_dir: Path, data: dict[str, Any], rows: list[dict[str, Any]], *, device: str = "cpu",
               log: Path, progress=None) -> list[dict[str, Any]]:
    """The rows with `scores`: one reward per answer."""
    import torch

    from llf_recipes.console import output_to

    with output_to(log), contextlib.redirect_stdout(sys.stderr):
        model, tokenizer, template, data_args = load(run_dir, data, device)
    scored = []
    with torch.no_grad():
        for row in rows:
            scores = []
            for answer in row["answers"]:
                ids = encode(tokenizer, template, data_args, row, answer)
                inputs = torch.tensor([ids], device=device)
                mask = torch.ones_like(inputs)
                _, _, values = model(input_ids=inputs, attention_mask=mask, output_hidden_states=True,
                                     return_dict=True, use_cache=False)
                scores.append(round(float(values[0, -1]), 6))
                if progress:
                    progress(1)
            scored.append({**row, "scores": scores})
    return scored

"""Loading a run's model and scoring token sequences: per-sequence losses, preference accuracy, samples."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError

IGNORE_INDEX = -100


@dataclass
class SequenceLoss:
    """Summed negative log-likelihood over a sequence's target tokens, and how many there were."""

    nll: float
    tokens: int

    @property
    def mean(self) -> float:
        return self.nll / self.tokens if self.tokens else math.nan


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LlfError("--device cuda asked for, but torch sees no CUDA device", fix="pass --device cpu")
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_model(model: dict[str, Any], device: str, dtype, trust_remote_code: bool = True):
    """The base model with the run's adapter chain: all but the last merged in, the last kept as a LoRA layer.

    That is how LLaMA-Factory loads a chain for inference; keeping the last adapter unmerged also keeps a small
    update visible in bf16, where adding it into the base weights could round it away.
    """
    from transformers import AutoModelForCausalLM

    base = model.get("base")
    if not base:
        raise LlfError("the run's manifest names no base model", fix="rerun the stage with llf-recipes run")
    adapters = list(model.get("adapters") or [])
    for path in adapters:
        if not Path(path, "adapter_config.json").is_file():
            raise LlfError(f"adapter {path} is missing (no adapter_config.json)",
                           fix="rerun the stage, or evaluate an exported model instead")
    # Straight onto the device: no host-memory copy of a large model on the way to the GPU.
    net = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, device_map={"": device},
                                               trust_remote_code=trust_remote_code)
    if adapters:
        from peft import PeftModel

        for i, path in enumerate(adapters):
            net = PeftModel.from_pretrained(net, path)
            if i < len(adapters) - 1:
                net = net.merge_and_unload()
    return net.to(device).eval()


def sequence_losses(net, input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], *, pad_id: int,
                    batch_size: int = 8, progress: Callable[[int], None] | None = None) -> list[SequenceLoss]:
    """Per-sequence summed NLL of the label tokens (teacher forcing, right padding, padded positions ignored)."""
    import torch

    device = next(net.parameters()).device
    order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]))  # similar lengths: less padding
    results: dict[int, SequenceLoss] = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(input_ids[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            lab = torch.full((len(idx), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(input_ids[i])
                ids[row, :n] = torch.tensor(input_ids[i])
                lab[row, :n] = torch.tensor(labels[i])
                mask[row, :n] = 1
            logits = net(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
            target = lab[:, 1:].to(device)
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX,
                                                    reduction="none")
            counted = target != IGNORE_INDEX
            for row, i in enumerate(idx):
                results[i] = SequenceLoss(float(nll[row][counted[row]].sum()), int(counted[row].sum()))
            if progress:
                progress(len(idx))
    return [results[i] for i in range(len(input_ids))]


def loss_metrics(losses: list[SequenceLoss]) -> dict[str, float | None]:
    """test_loss: the token-weighted mean NLL of the answers; perplexity: its exponential."""
    tokens = sum(x.tokens for x in losses)
    if not tokens:
        return {"test_loss": None, "perplexity": None}
    loss = sum(x.nll for x in losses) / tokens
    return {"test_loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}


def preference_metrics(chosen: list[float], rejected: list[float]) -> dict[str, Any]:
    """Seed 004's preference keys from per-pair mean losses: a pair is right when chosen's loss is strictly lower."""
    if len(chosen) != len(rejected):
        raise ValueError("chosen and rejected losses must pair up")
    pairs = [(c, r) for c, r in zip(chosen, rejected) if not (math.isnan(c) or math.isnan(r))]
    if not pairs:
        return {"preference_accuracy": None, "preference_correct": 0, "preference_total": 0,
                "avg_chosen_loss": None, "avg_rejected_loss": None, "loss_margin": None}
    correct = sum(1 for c, r in pairs if c < r)
    avg_c = sum(c for c, _ in pairs) / len(pairs)
    avg_r = sum(r for _, r in pairs) / len(pairs)
    return {"preference_accuracy": correct / len(pairs), "preference_correct": correct, "preference_total": len(pairs),
            "avg_chosen_loss": avg_c, "avg_rejected_loss": avg_r, "loss_margin": avg_r - avg_c}


def generate(net, tokenizer, template, rows: list[dict[str, Any]], *, max_new_tokens: int,
             progress: Callable[[int], None] | None = None) -> list[dict[str, str]]:
    """Greedy answers to the rows' prompts, built as LLaMA-Factory's chat engine builds them."""
    import torch

    device = next(net.parameters()).device
    stop = template.get_stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    samples = []
    for row in rows:
        messages = list(row["_prompt"]) + [{"role": "assistant", "content": ""}]
        prompt_ids, _ = template.encode_oneturn(tokenizer, messages, row.get("_system"), row.get("_tools"))
        ids = torch.tensor([prompt_ids], device=device)
        with torch.inference_mode():
            out = net.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                               do_sample=False, eos_token_id=stop, pad_token_id=pad)
        text = tokenizer.decode(out[0, len(prompt_ids):], skip_special_tokens=True)
        sample = {"prompt": row["_prompt"][-1]["content"], "response": text}
        if row["_response"] and row["_response"][0].get("content"):
            sample["reference"] = row["_response"][0]["content"]
        samples.append(sample)
        if progress:
            progress(1)
    return samples

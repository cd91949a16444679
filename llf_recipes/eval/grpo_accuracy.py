"""GRPO runs scored the way they were trained: answers to the prompts the run saw (system/format prompt included),
scored by the run's own reward functions; accuracy is the correctness reward (the normalized `<answer>` number equals
the reference), format rate the format reward.

The rows: `eval --dataset FILE` (JSON lines with `prompt` and `answer`), else the run's data file split the way the
EasyR1 engine splits it (val_size rows, seeded shuffle); the TRL engine trains on every row, so for a TRL run these
rows were seen in training, and the record says so.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError
from llf_recipes.grpo import rewards as reward_lib


def is_grpo_file(name: str) -> bool:
    """A JSON-lines file of GRPO rows (prompt + answer), named on the command line instead of a dataset."""
    path = Path(name)
    if path.suffix not in (".jsonl", ".json") or not path.is_file():
        return False
    with path.open(encoding="utf-8") as fh:
        first = fh.readline().strip()
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and "prompt" in row and "answer" in row


def wants_grpo(config: dict[str, Any], datasets: list[str]) -> bool:
    if datasets:
        return all(is_grpo_file(d) for d in datasets)
    return config.get("stage") == "grpo"


def data_file(config: dict[str, Any], data: dict[str, Any]) -> Path:
    """The run's training file: the manifest's record of it, else DATASET_DIR/DATASET.jsonl from where it ran."""
    name = str(config.get("dataset") or "")
    recorded = ((data.get("datasets") or {}).get(name) or {}).get("file")
    if recorded:
        return Path(recorded)
    if name.endswith((".jsonl", ".json")):
        path = Path(name)
    else:
        path = Path(str(config.get("dataset_dir") or "data")) / f"{name}.jsonl"
    if not path.is_absolute() and data.get("cwd"):
        path = Path(data["cwd"]) / path
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise LlfError(f"{path} does not exist", key="dataset",
                       fix="prepare the dataset again (llf-recipes prepare NAME) or pass --dataset FILE.jsonl")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LlfError(f"not valid JSON: {exc.msg}", where=f"{path}:{n}") from None
            if not isinstance(row, dict) or "prompt" not in row or "answer" not in row:
                raise LlfError("a GRPO row needs `prompt` and `answer`", where=f"{path}:{n}",
                               fix="convert it with llf-recipes convert NAME --kind gsm8k_grpo")
            rows.append(row)
    return rows


def held_out(rows: list[dict[str, Any]], val_size: float, seed: int) -> list[dict[str, Any]]:
    """The validation rows of EasyR1's split: a count (>= 1) or a share, from a shuffle seeded with the run's seed."""
    count = int(val_size) if val_size >= 1 else max(1, round(len(rows) * val_size))
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in sorted(order[:min(count, len(rows))])]


def eval_rows(config: dict[str, Any], data: dict[str, Any], datasets: list[str], limit: int | None
              ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows, what they are) for a GRPO evaluation."""
    if datasets:
        rows = [r for d in datasets for r in read_rows(Path(d))]
        source = f"{','.join(datasets)} (all rows)"
    else:
        path = data_file(config, data)
        rows = held_out(read_rows(path), float(config.get("val_size") or 0.05), int(config.get("seed", 42)))
        source = f"{path.name} (val_size {config.get('val_size', 0.05)} split, seed {config.get('seed', 42)})"
        if (data.get("model") or {}).get("backend") == "trl" or config.get("backend") == "trl":
            source += "; the TRL engine trained on every row"
    rows = rows[:limit] if limit else rows
    return rows, {"source": source, "kind": "grpo", "rows": len(rows)}


def reward_functions(config: dict[str, Any], cwd: str | None) -> tuple[dict[str, Callable[..., float]], list[str]]:
    """The run's rewards by label (the built-in set when it names none), and notes on the ones that did not load."""
    names = config.get("rewards") or list(reward_lib.DEFAULT)
    found, notes = {}, []
    for name in names:
        try:
            found[reward_lib.label(name)] = reward_lib.load(name, Path(cwd or "."))
        except (reward_lib.RewardSpecError, ImportError, OSError) as exc:
            notes.append(f"reward {name} not scored: {exc}")
    return found, notes


def prompt_text(tokenizer, prompt: Any) -> str:
    """The prompt as the TRL trainer builds it: chat messages through the tokenizer's chat template."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return str(prompt)


def score(net, tokenizer, rows: list[dict[str, Any]], rewards: dict[str, Callable[..., float]], *,
          max_new_tokens: int, samples: int, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Greedy answers to every row, each scored by every reward; accuracy and format rate from the shared rewards."""
    import torch

    device = next(net.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    totals = {name: 0.0 for name in rewards}
    correct = formatted = 0
    kept = []
    for row in rows:
        text = prompt_text(tokenizer, row["prompt"])
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
        with torch.inference_mode():
            out = net.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                               do_sample=False, pad_token_id=pad)
        response = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        extra = {k: v for k, v in row.items() if k not in ("prompt", "answer")}
        scores = {name: float(fn(response, row["answer"], **extra)) for name, fn in rewards.items()}
        for name, value in scores.items():
            totals[name] += value
        right = reward_lib.correctness(response, row["answer"]) > 0
        correct += right
        formatted += reward_lib.format_reward(response, row["answer"]) > 0
        if len(kept) < samples:
            question = row.get("question") or (row["prompt"][-1]["content"] if isinstance(row["prompt"], list) else row["prompt"])
            kept.append({"prompt": question, "response": response, "reference": str(row["answer"]),
                         "correct": right, "rewards": scores})
        if progress:
            progress(1)
    n = len(rows)
    means = {name: total / n for name, total in totals.items()} if n else {}
    return {"grpo": {"rows": n, "correct": correct, "accuracy": correct / n if n else None,
                     "format_rate": formatted / n if n else None,
                     "mean_reward": sum(means.values()) if means else None, "rewards": means},
            "generation_samples": kept}


def training_system_prompt(data: dict[str, Any]) -> str | None:
    """The system message a GRPO run's prompts carried (its first data row), so `ask`/`chat` prompt it the same way."""
    config = data.get("config") or {}
    if config.get("stage") != "grpo":
        return None
    path = data_file(config, data)
    try:
        with path.open(encoding="utf-8") as fh:
            row = json.loads(fh.readline())
    except (OSError, json.JSONDecodeError):
        return None
    prompt = row.get("prompt") if isinstance(row, dict) else None
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict) and prompt[0].get("role") == "system":
        return str(prompt[0].get("content") or "") or None
    return None

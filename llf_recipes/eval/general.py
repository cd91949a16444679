"""The forgetting check's general-knowledge set: multiple-choice items scored by log-likelihood.

An item is `{"question": ..., "choices": [...], "answer": N | "B" | "the choice text"}` (JSON lines or a JSON list);
a registered dataset names such a file in dataset_info.json (`file_name`). Each choice is the answer of a one-turn
chat (the run's template), and the model picks the choice whose tokens it finds most likely (summed log-probability,
as lm-evaluation-harness's `acc`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError
from llf_recipes.eval import heldout, scoring


def resolve(name: str, data_dir: str | None) -> Path:
    """A file path, or a dataset registered in DATA_DIR/dataset_info.json."""
    path = Path(name)
    if path.is_file():
        return path
    directory = Path(data_dir or "data")
    info_path = directory / "dataset_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    entry = info.get(name)
    if not isinstance(entry, dict) or not entry.get("file_name"):
        raise LlfError(f"--general {name}: neither a file nor a dataset registered in {info_path}", key="--general",
                       fix="pass a multiple-choice .jsonl file, or --data-dir DIR where NAME is registered")
    return directory / entry["file_name"]


def read_items(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise LlfError(f"not valid JSON: {exc.msg}", where=f"{path}:{exc.lineno}") from None
    items = []
    for n, row in enumerate(rows, 1):
        choices = row.get("choices") if isinstance(row, dict) else None
        if not isinstance(choices, list) or len(choices) < 2 or not row.get("question"):
            raise LlfError("an item needs `question` and at least two `choices`", where=f"{path}: item {n}",
                           fix='write {"question": "...", "choices": ["...", "..."], "answer": 0}')
        items.append({"question": str(row["question"]), "choices": [str(c) for c in choices],
                      "answer": _answer_index(row.get("answer"), choices, f"{path}: item {n}")})
    if not items:
        raise LlfError(f"{path} holds no items", key="--general")
    return items


def _answer_index(answer: Any, choices: list[Any], where: str) -> int:
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return answer
    if isinstance(answer, str):
        if len(answer) == 1 and "A" <= answer.upper() < chr(ord("A") + len(choices)):
            return ord(answer.upper()) - ord("A")
        if answer in choices:
            return choices.index(answer)
    raise LlfError(f"answer {answer!r} is not a choice", where=where,
                   fix=f"give an index 0-{len(choices) - 1}, a letter, or the choice's text")


def encode(items: list[dict[str, Any]], template, tokenizer, args) -> tuple[list, list]:
    """Every (question, choice) as a one-turn chat, the choice's tokens as the labels."""
    rows = [{"_prompt": [{"role": "user", "content": item["question"]}],
             "_response": [{"role": "assistant", "content": choice}],
             "_system": "", "_tools": "", "_images": None, "_videos": None, "_audios": None}
            for item in items for choice in item["choices"]]
    enc = heldout.encode(heldout.HeldOut("sft", rows, "general"), template, tokenizer, args)
    return enc["input_ids"], enc["labels"]


def score(net, items: list[dict[str, Any]], ids: list, labels: list, *, pad_id: int, batch_size: int,
          source: str, progress=None) -> dict[str, Any]:
    losses = scoring.sequence_losses(net, ids, labels, pad_id=pad_id, batch_size=batch_size, progress=progress)
    picked, k = [], 0
    for item in items:
        nll = [x.nll for x in losses[k:k + len(item["choices"])]]
        k += len(item["choices"])
        picked.append(min(range(len(nll)), key=nll.__getitem__))
    correct_items = [p == item["answer"] for p, item in zip(picked, items)]
    n = len(items)
    return {"source": source, "items": n, "correct": sum(correct_items), "accuracy": sum(correct_items) / n,
            "correct_items": correct_items, "picked": picked}

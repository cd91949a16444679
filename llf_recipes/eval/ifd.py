"""Instruction-following difficulty (IFD): how much the instruction helps a model produce the answer.

IFD = PPL(answer | instruction) / PPL(answer), each perplexity the exponential of the mean loss over the answer's
tokens. Given the instruction, the answer follows the model's chat template's user turn and generation prompt (plain
text and a newline when the tokenizer has no template); alone, it follows only the tokenizer's BOS token (EOS where
there is none), so both losses cover the same answer tokens. A score near or above 1 means the instruction hardly
helps: a row the model could write anyway. Selection keeps the highest scores.

Scores go to a JSON Lines file beside the output (OUT's `.ifd.jsonl`), one line per row, flushed batch by batch: a run
that stops is resumed by running it again with the same input, model and settings.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from llf_recipes.errors import LlfError

# Field pairs tried in order when --prompt/--response are not given: alpaca's (with its optional input), then common ones.
LAYOUTS = (("instruction", "output"), ("prompt", "response"), ("query", "response"), ("question", "answer"))


@dataclass
class IfdOptions:
    input: Path
    output: Path
    model: str
    top: float | None = None
    min: float | None = None
    max: float | None = None
    prompt: str | None = None
    response: str | None = None
    batch_size: int = 8
    cutoff: int = 1024  # tokens kept of the instruction (its end) and of the answer (its start)
    device: str = "auto"
    dtype: str = "auto"
    output_root: str = "saves"

    @property
    def scores_path(self) -> Path:
        return self.output.with_name(self.output.name.removesuffix(".jsonl") + ".ifd.jsonl")


def numbered_rows(path: Path):
    """(line number, row) for each non-blank line of a JSONL file, read as a stream."""
    if not path.is_file():
        raise LlfError(f"{path} does not exist", key="IN")
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise LlfError(f"invalid JSON: {exc}", where=f"{path}:{lineno}", fix="one JSON object per line") from None
            if not isinstance(row, dict):
                raise LlfError("the line is not a JSON object", where=f"{path}:{lineno}")
            yield lineno, row


def pair_of(opts: IfdOptions, first: dict[str, Any], where: str):
    """A function of (line number, row) -> (instruction, answer), for the fields named or found in the first row."""
    prompt, response = opts.prompt, opts.response
    if not (prompt and response):
        found = next(((p, r) for p, r in LAYOUTS if p in first and r in first), None)
        if found is None:
            raise LlfError(f"no instruction and answer fields among {', '.join(first) or 'none'}", where=where,
                           key="--prompt", fix="name them: --prompt FIELD --response FIELD")
        prompt, response = prompt or found[0], response or found[1]

    def pair(lineno: int, row: dict[str, Any]) -> tuple[str, str]:
        for name, option in ((prompt, "--prompt"), (response, "--response")):
            if not isinstance(row.get(name), str):
                raise LlfError(f"field {name!r} (named by {option}) is missing or not text",
                               where=f"{opts.input}:{lineno}", key=name)
        instruction = row[prompt]
        if prompt == "instruction" and isinstance(row.get("input"), str) and row["input"].strip():
            instruction = f"{instruction}\n{row['input']}"
        return instruction, row[response]

    return pair


def check_rows(opts: IfdOptions):
    """Read the input once before any model is loaded, so a bad row stops the run at once: -> (pair function, rows)."""
    pair, count = None, 0
    for lineno, row in numbered_rows(opts.input):
        if pair is None:
            pair = pair_of(opts, row, f"{opts.input}:{lineno}")
        pair(lineno, row)
        count += 1
    if pair is None:
        raise LlfError("has no rows", where=str(opts.input))
    return pair, count


def encode(tokenizer, instruction: str, answer: str, cutoff: int) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, answer ids, start ids): the tokens before the answer with and without the instruction."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = instruction + "\n"
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"][-cutoff:]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"][:cutoff]
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return prompt_ids, answer_ids, [start]


def score_batch(net, tokenizer, pairs: list[tuple[str, str]], cutoff: int, batch_size: int) -> list[dict[str, Any]]:
    from llf_recipes.eval.scoring import IGNORE_INDEX, sequence_losses

    cond_ids, cond_labels, alone_ids, alone_labels = [], [], [], []
    for instruction, answer in pairs:
        prompt_ids, answer_ids, start = encode(tokenizer, instruction, answer, cutoff)
        cond_ids.append(prompt_ids + answer_ids)
        cond_labels.append([IGNORE_INDEX] * len(prompt_ids) + answer_ids)
        alone_ids.append(start + answer_ids)
        alone_labels.append([IGNORE_INDEX] + answer_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cond = sequence_losses(net, cond_ids, cond_labels, pad_id=pad, batch_size=batch_size)
    alone = sequence_losses(net, alone_ids, alone_labels, pad_id=pad, batch_size=batch_size)
    out = []
    for c, a in zip(cond, alone):
        if not a.tokens:
            out.append({"ifd": None, "loss_cond": None, "loss_answer": None, "tokens": 0})
            continue
        out.append({"ifd": math.exp(c.mean - a.mean), "loss_cond": c.mean, "loss_answer": a.mean, "tokens": a.tokens})
    return out


def choose(scores: list[float | None], top: float | None, low: float | None, high: float | None) -> list[int]:
    """Indices kept, in input order: scores within [low, high], then the round(top * n) highest of those (earlier rows
    first among equal scores)."""
    eligible = [i for i, s in enumerate(scores) if s is not None and (low is None or s >= low)
                and (high is None or s <= high)]
    if top is not None:
        keep = int(top * len(eligible) + 0.5)
        eligible = sorted(sorted(eligible, key=lambda i: -scores[i])[:keep])
    return eligible


def resolve_model(target: str, output_root: str) -> dict[str, Any]:
    """A run (its manifest's base model and adapters) or a Hugging Face model directory."""
    path = Path(target)
    if (path / "config.json").is_file() and not (path / "llf-run.json").is_file():
        return {"base": str(path.resolve()), "adapters": []}
    from llf_recipes import manifest

    _, data = manifest.resolve(target, output_root)
    return data.get("model") or {}


def _settings(opts: IfdOptions, model: dict[str, Any]) -> dict[str, Any]:
    """What decides the scores: a resumed scores file must have been written with the same."""
    stat = opts.input.stat()
    return {"input": str(opts.input.resolve()), "input_bytes": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
            "model": ",".join([str(model.get("base")), *map(str, model.get("adapters") or [])]),
            "prompt": opts.prompt, "response": opts.response, "cutoff": opts.cutoff}


def _resume(path: Path, settings: dict[str, Any]) -> tuple[array, int]:
    """The scores a previous run with the same settings wrote, and the byte length of its whole lines: ([], 0) when
    there is no such run. A line a stop cut short, and anything after it, is not counted."""
    scores, good = array("d"), 0
    if not path.is_file():
        return scores, 0
    with path.open("rb") as fh:
        for i, line in enumerate(fh):
            try:
                record = orjson.loads(line) if line.endswith(b"\n") else None
            except orjson.JSONDecodeError:
                record = None
            if i == 0 and record != {"settings": settings}:
                return array("d"), 0
            if record is None or (i and record.get("row") != i):
                break
            if i:
                scores.append(math.nan if record["ifd"] is None else record["ifd"])
            good += len(line)
    return scores, good


def select(opts: IfdOptions, say=print) -> tuple[int, int]:
    """Score every row of opts.input and write the chosen rows to opts.output; returns (kept, scored).

    The input is streamed (read once to check it, once to score the rows not scored yet, once to write the rows
    kept): memory holds one batch of rows and one float per row, whatever the size of the input."""
    from llf_recipes.atomic import open_atomic

    pair, total = check_rows(opts)
    model = resolve_model(opts.model, opts.output_root)
    settings = _settings(opts, model)
    scores, length = _resume(opts.scores_path, settings)
    if scores:
        say(f"{opts.scores_path}: resuming after {len(scores)} scored row(s)")
    if len(scores) < total:
        from transformers import AutoTokenizer

        from llf_recipes.eval.scoring import load_model, pick_device, pick_dtype

        device = pick_device(opts.device)
        net = load_model(model, device, pick_dtype(opts.dtype, device))
        tokenizer = AutoTokenizer.from_pretrained(model["base"], trust_remote_code=True)
        with opts.scores_path.open("r+b" if length else "wb") as fh:
            fh.truncate(length)  # a line a stop cut short goes
            fh.seek(length)
            if not length:
                fh.write(orjson.dumps({"settings": settings}, option=orjson.OPT_APPEND_NEWLINE))
            chunk = max(opts.batch_size * 8, 64)
            rows = islice(numbered_rows(opts.input), len(scores), None)
            while batch := list(islice(rows, chunk)):
                first = len(scores) + 1
                scored = score_batch(net, tokenizer, [pair(*numbered) for numbered in batch], opts.cutoff,
                                     opts.batch_size)
                for i, record in enumerate(scored, first):
                    fh.write(orjson.dumps({"row": i, **record}, option=orjson.OPT_APPEND_NEWLINE))
                    scores.append(math.nan if record["ifd"] is None else record["ifd"])
                fh.flush()
    values = [None if math.isnan(s) else s for s in scores]
    chosen = choose(values, opts.top, opts.min, opts.max)
    kept = iter(chosen)
    with open_atomic(opts.output) as out:
        wanted = next(kept, None)
        for i, (_, row) in enumerate(numbered_rows(opts.input)):
            if i == wanted:
                out.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
                wanted = next(kept, None)
    return len(chosen), sum(v is not None for v in values)

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
from dataclasses import dataclass
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


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise LlfError(f"{path} does not exist", key="IN")
    rows = []
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
            rows.append(row)
    if not rows:
        raise LlfError("has no rows", where=str(path))
    return rows


def texts(rows: list[dict[str, Any]], opts: IfdOptions, where: str) -> list[tuple[str, str]]:
    """(instruction, answer) per row."""
    prompt, response = opts.prompt, opts.response
    if not (prompt and response):
        first = rows[0]
        found = next(((p, r) for p, r in LAYOUTS if p in first and r in first), None)
        if found is None:
            raise LlfError(f"no instruction and answer fields among {', '.join(first) or 'none'}", where=f"{where}:1",
                           key="--prompt", fix="name them: --prompt FIELD --response FIELD")
        prompt, response = prompt or found[0], response or found[1]
    out = []
    for i, row in enumerate(rows, 1):
        for name, option in ((prompt, "--prompt"), (response, "--response")):
            if not isinstance(row.get(name), str):
                raise LlfError(f"field {name!r} (named by {option}) is missing or not text", where=f"{where}:{i}",
                               key=name)
        instruction = row[prompt]
        if prompt == "instruction" and isinstance(row.get("input"), str) and row["input"].strip():
            instruction = f"{instruction}\n{row['input']}"
        out.append((instruction, row[response]))
    return out


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


def _resume(path: Path, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The scores a previous run with the same settings wrote; none when there is no such run."""
    if not path.is_file():
        return []
    lines = path.read_bytes().splitlines()
    head, done = None, []
    try:
        head = orjson.loads(lines[0]) if lines else None
        for line in lines[1:]:
            done.append(orjson.loads(line))
    except orjson.JSONDecodeError:
        pass  # a line cut short by a stop: the whole lines before it count
    if head != {"settings": settings}:
        return []
    return done


def select(opts: IfdOptions, say=print) -> tuple[int, int]:
    """Score every row of opts.input and write the chosen rows to opts.output; returns (kept, scored)."""
    from llf_recipes.atomic import open_atomic

    rows = read_rows(opts.input)
    pairs = texts(rows, opts, str(opts.input))
    model = resolve_model(opts.model, opts.output_root)
    settings = _settings(opts, model)
    done = _resume(opts.scores_path, settings)
    if done:
        say(f"{opts.scores_path}: resuming after {len(done)} scored row(s)")
    if len(done) < len(rows):
        from transformers import AutoTokenizer

        from llf_recipes.eval.scoring import load_model, pick_device, pick_dtype

        device = pick_device(opts.device)
        net = load_model(model, device, pick_dtype(opts.dtype, device))
        tokenizer = AutoTokenizer.from_pretrained(model["base"], trust_remote_code=True)
        with opts.scores_path.open("wb") as fh:  # rewritten whole: a line a stop cut short goes
            fh.write(orjson.dumps({"settings": settings}, option=orjson.OPT_APPEND_NEWLINE))
            for record in done:
                fh.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            chunk = max(opts.batch_size * 8, 64)
            for start in range(len(done), len(rows), chunk):
                scored = score_batch(net, tokenizer, pairs[start:start + chunk], opts.cutoff, opts.batch_size)
                scored = [{"row": i, **record} for i, record in enumerate(scored, start + 1)]
                for record in scored:
                    fh.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
                fh.flush()
                done += scored
    scores = [d["ifd"] for d in done]
    kept = choose(scores, opts.top, opts.min, opts.max)
    with open_atomic(opts.output) as out:
        for i in kept:
            out.write(orjson.dumps(rows[i], option=orjson.OPT_APPEND_NEWLINE))
    return len(kept), sum(s is not None for s in scores)

"""Convert source rows into the LLaMA-Factory layout our dataset entries describe (alpaca-style JSONL).

Kinds, named by each fragment's `convert.kind`:
  alpaca              instruction / input / output (system, history kept when present)
  pairs               preference pairs -> instruction / input / chosen / rejected (LLaMA-Factory's sharegpt
                      preference rows too: earlier turns as history, a system turn as system)
  pairs_to_sft        preference pairs -> instruction / input / output (the chosen answer)
  pairs_to_kto        preference pairs -> two rows with output and label true (chosen) / false (rejected)
  messages_to_alpaca  a message list (role/content or from/value) -> instruction / input / output, earlier turns as
                      history; odd turn orders are bad rows, never reordered; a kto label and media columns kept,
                      chosen/rejected messages become an alpaca preference row
  sharegpt_to_alpaca  the same, reading `conversations` first
  alpaca_to_sharegpt  instruction / input / output (history, system, chosen/rejected, label) -> from/value turns
  openai_to_sharegpt  OpenAI chat rows (tool calls and tool results kept) -> from/value turns with function_call and
                      observation turns and a `tools` column
  gsm8k_grpo          question / "... #### 72" -> chat prompt (system + optional one-shot) and the numeric answer
Preference sources differ in field names and shapes; `normalize_pair` accepts all the common ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from llf_recipes.atomic import open_atomic
from llf_recipes.data.convert_chat import alpaca_to_sharegpt, chat_pair, kept_fields, openai_to_sharegpt, to_alpaca
from llf_recipes.data.rows import BadRow, dumps, iter_rows, reject_line
from llf_recipes.errors import LlfError

KINDS = ("alpaca", "pairs", "pairs_to_sft", "pairs_to_kto", "messages_to_alpaca", "sharegpt_to_alpaca",
         "alpaca_to_sharegpt", "openai_to_sharegpt", "gsm8k_grpo")
PROMPT_FIELDS = ("prompt", "instruction", "question", "query")
PAIR_FIELDS = (("chosen", "rejected"), ("better_response", "worse_response"), ("response_j", "response_k"))


def _text(row: dict[str, Any], key: str, where: str, allow_empty: bool = False) -> str:
    value = row.get(key)
    if value is None:
        raise BadRow(f"field {key!r} is missing", where=where, key=key)
    if not isinstance(value, str):
        raise BadRow(f"field {key!r} must be a string, got {type(value).__name__}", where=where, key=key)
    if not allow_empty and not value.strip():
        raise BadRow(f"field {key!r} is empty", where=where, key=key)
    return value


def _last(messages: Any, role: str, where: str, key: str) -> str:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRow(f"field {key!r} must be a list of {{role, content}} messages", where=where, key=key)
    for message in reversed(messages):
        if message.get("role") == role:
            content = message.get("content")
            if not isinstance(content, str) or not content.strip():
                raise BadRow(f"the last {role} message in {key!r} has no text", where=where, key=key)
            return content
    raise BadRow(f"field {key!r} has no {role} message", where=where, key=key)


def normalize_pair(row: dict[str, Any], where: str) -> dict[str, Any]:
    """-> {prompt, chosen, rejected} from any of the common preference layouts (plus history and system for
    LLaMA-Factory's own sharegpt preference rows, whose chosen/rejected are one message each)."""
    for good, bad in PAIR_FIELDS:
        if good in row and bad in row:
            break
    else:
        half = next(((g, b) for g, b in PAIR_FIELDS if g in row or b in row), None)
        if half is not None:  # one side of a pair: name the side that is missing
            missing = half[1] if half[0] in row else half[0]
            raise BadRow(f"no preference pair: field {missing!r} is missing (the other half of {half[0]}/{half[1]})",
                         where=where, key=missing)
        raise BadRow("no preference pair: expected fields 'chosen'/'rejected', 'better_response'/'worse_response' or "
                     "'response_j'/'response_k'", where=where, key="chosen")
    if isinstance(row[good], dict) and isinstance(row[bad], dict):
        return chat_pair(row, where, good, bad)
    prompt_key = next((k for k in PROMPT_FIELDS if isinstance(row.get(k), str)), None)
    if isinstance(row[good], list):  # message lists, as in UltraFeedback
        prompt = row[prompt_key] if prompt_key else _last(row[good], "user", where, good)
        return {"prompt": prompt, "chosen": _last(row[good], "assistant", where, good),
                "rejected": _last(row[bad], "assistant", where, bad)}
    if prompt_key is None:
        present = next((k for k in PROMPT_FIELDS if row.get(k) is not None), None)
        if present is not None:  # there, but not text: name it as every other field error does
            raise BadRow(f"no prompt: field {present!r} must be a string, got {type(row[present]).__name__}",
                         where=where, key=present)
        raise BadRow(f"no prompt: expected one of the fields {', '.join(map(repr, PROMPT_FIELDS))}, or a "
                     "'conversations' list with chosen/rejected as messages (LLaMA-Factory's sharegpt preference rows)",
                     where=where, key="prompt")
    return {"prompt": _text(row, prompt_key, where), "chosen": _text(row, good, where), "rejected": _text(row, bad, where)}


def _alpaca(row: dict[str, Any], where: str) -> Iterator[dict[str, Any]]:
    out = {"instruction": _text(row, "instruction", where), "input": _text(row, "input", where, allow_empty=True) if "input" in row else "",
           "output": _text(row, "output", where)}
    out.update({extra: row[extra] for extra in ("system", "history") if row.get(extra)})
    out.update(kept_fields(row))
    yield out


def _context(p: dict[str, Any]) -> dict[str, Any]:
    return {k: p[k] for k in ("history", "system") if p.get(k)}


def _pairs(row, where):
    p = normalize_pair(row, where)
    yield {"instruction": p["prompt"], "input": "", "chosen": p["chosen"], "rejected": p["rejected"], **_context(p)}


def _pairs_to_sft(row, where):
    p = normalize_pair(row, where)
    yield {"instruction": p["prompt"], "input": "", "output": p["chosen"], **_context(p)}


def _pairs_to_kto(row, where):
    p = normalize_pair(row, where)
    yield {"instruction": p["prompt"], "input": "", "output": p["chosen"], "label": True, **_context(p)}
    yield {"instruction": p["prompt"], "input": "", "output": p["rejected"], "label": False, **_context(p)}


def _gsm8k(row, where, one_shot=True):
    from llf_recipes.data.gsm8k import hash_answer, to_grpo_row

    question = _text(row, "question", where)
    answer = hash_answer(_text(row, "answer", where))
    if answer is not None:  # no number after ####: dropped and counted, as GSM8K-derived sets do
        yield to_grpo_row(question, answer, one_shot=one_shot)


CONVERTERS = {"alpaca": _alpaca, "pairs": _pairs, "pairs_to_sft": _pairs_to_sft, "pairs_to_kto": _pairs_to_kto,
              "messages_to_alpaca": to_alpaca, "sharegpt_to_alpaca": partial(to_alpaca, field="conversations"),
              "alpaca_to_sharegpt": alpaca_to_sharegpt, "openai_to_sharegpt": openai_to_sharegpt, "gsm8k_grpo": _gsm8k}


def _check_options(kind: str, convert, options: dict[str, Any]) -> None:
    import inspect

    taken = [p for p in inspect.signature(convert).parameters if p not in ("row", "where")]
    unknown = [k for k in options if k not in taken]
    if unknown:
        raise LlfError(f"conversion {kind!r} does not take option(s) {', '.join(unknown)}", key="--option",
                       fix=f"its options: {', '.join(taken)}" if taken else f"{kind} takes no options")


@dataclass
class ConvertReport:
    read: int = 0
    written: int = 0
    dropped: int = 0  # valid rows the conversion leaves out by design (e.g. GSM8K rows without a numeric answer)
    rejected: list[BadRow] = field(default_factory=list)
    rejects_path: Path | None = None


def convert_file(src: str | Path | list[Path], dest: str | Path, kind: str, *, skip_bad: bool = False,
                 limit: int | None = None, options: dict[str, Any] | None = None) -> ConvertReport:
    """Stream `src` (one file, or the shards of a split) through the converter into `dest`; nothing is written unless
    every row converts (or skip_bad)."""
    if kind not in CONVERTERS:
        raise LlfError(f"conversion kind {kind!r} is unknown", key="kind", fix=f"use one of {', '.join(KINDS)}")
    convert = CONVERTERS[kind]
    _check_options(kind, convert, options or {})
    report = ConvertReport()
    bad: list[BadRow] | None = report.rejected if skip_bad else None
    dest = Path(dest)
    sources = src if isinstance(src, list) else [Path(src)]
    for one in sources:
        if dest.resolve() == Path(one).resolve():
            raise LlfError(f"the output {dest} is the input: converting it in place would lose the rows", key="-o",
                           fix="write to another file (-o NEW.jsonl), then move it")
    with open_atomic(dest) as out:
        for where, row in (item for one in sources for item in iter_rows(one, bad)):
            if limit is not None and report.read >= limit:
                break
            report.read += 1
            try:
                produced = 0
                for converted in convert(row, where, **(options or {})):
                    out.write(dumps(converted))
                    produced += 1
                report.written += produced
                report.dropped += produced == 0
            except BadRow as exc:
                if not skip_bad:
                    raise
                exc.raw = exc.raw or dumps(row)
                report.rejected.append(exc)
        if report.written == 0:
            raise LlfError(f"no row of {src} converted ({len(report.rejected)} rejected)", where=str(src))
    rejects_path = dest.with_name(dest.name + ".rejects.jsonl")
    if report.rejected:
        report.rejects_path = rejects_path
        with open_atomic(report.rejects_path) as rej:
            for r in report.rejected:
                rej.write(reject_line(r))
    else:  # an earlier run's rejects do not describe this output
        rejects_path.unlink(missing_ok=True)
    return report

"""Which LLaMA-Factory layout a file's rows are in, and the complete dataset_info.json entry that reads them.

Looks at the first rows only: the entry is then checked against the whole file (`data.check`) before anyone writes it.
Layouts: alpaca (instruction/input/output, history, system), alpaca preference pairs (chosen/rejected text), sharegpt
with from/value tags or role/content tags (system turn, tools, function calls and observations), sharegpt preference
rows (chosen/rejected messages), kto (a true/false column), plain text (`.txt` or one text column), and media columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llf_recipes.data.layouts import COLUMNS, DEFAULT_TAGS, OPENAI_TAGS, TAGS
from llf_recipes.errors import LlfError

PROMPT_NAMES = ("instruction", "prompt", "question", "query")
RESPONSE_NAMES = ("output", "response", "answer", "completion")
TEXT_NAMES = ("text", "content", "document")
MESSAGE_NAMES = ("conversations", "messages", "conversation", "dialog")
KTO_NAMES = ("label", "kto_tag", "tag")
ROLE_FAMILIES = {("from", "value"): DEFAULT_TAGS, ("role", "content"): OPENAI_TAGS}


@dataclass
class Detected:
    layout: str  # words for people: "sharegpt (role/content)", "alpaca", ...
    entry: dict[str, Any]  # without file_name


def _first(keys: set[str], names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in keys), None)


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value) and \
        any(k in value[0] for k, _ in ROLE_FAMILIES)


def describe(rows: list[dict[str, Any]]) -> str:
    """A short name for the layout the rows look like, for error messages ("alpaca", "sharegpt (from/value)"...)."""
    try:
        return detect(rows, None).layout
    except LlfError:
        keys = sorted({k for r in rows for k in r})
        return "rows with fields " + ", ".join(keys[:8])


def detect(rows: list[dict[str, Any]], stage: str | None, *, text_file: bool = False, where: str = "the file") -> Detected:
    """The layout of `rows` and an entry for `stage` (None: whichever the data fits)."""
    if text_file:
        if stage not in ("pt", None):
            raise LlfError(f"a .txt file is plain text, one row per line: it feeds stage pt, not {stage}", where=where,
                           key="--stage", fix="register it with --stage pt, or write the rows as JSON (alpaca or sharegpt)")
        return Detected("plain text", {"formatting": "alpaca", "ranking": False, "columns": {"prompt": "text"}})
    if not rows:
        raise LlfError("holds no rows", where=where)
    keys: set[str] = set()
    for row in rows:
        keys.update(row)
    sample = {k: next((r[k] for r in rows if r.get(k) not in (None, [], "")), None) for k in keys}
    messages = next((k for k in (*MESSAGE_NAMES, *sorted(keys)) if _is_messages(sample.get(k))), None)
    bools = [k for k in (*KTO_NAMES, *sorted(keys)) if isinstance(sample.get(k), bool)]
    kto = bools[0] if bools and stage in ("kto", None) else None
    if stage == "kto" and not kto:
        raise LlfError("stage kto needs a kto_tag column of true/false (e.g. \"label\": true) and the rows have none", where=where,
                       key="kto_tag", fix="add the column, or convert preference pairs with `llf-recipes convert FILE "
                                          "--kind pairs_to_kto`")
    columns: dict[str, str] = {}
    for media in ("images", "videos", "audios"):
        if media in keys:
            columns[media] = media
    if messages:
        found = _sharegpt(rows, messages, sample, keys, stage, columns, where)
    else:
        found = _alpaca(sample, keys, stage, columns, where)
    if kto:
        found.entry["columns"]["kto_tag"] = kto
        found.layout += f", kto ({kto})"
    media = [m for m in ("images", "videos", "audios") if m in columns]
    if media:
        found.layout += ", " + ", ".join(media)
    return found


def _roles(rows: list[dict], messages: str, role_tag: str) -> set[str]:
    """Roles seen in the rows (unknown ones are left to the whole-file check, which names each row LLaMA-Factory drops)."""
    roles: set[str] = set()
    for row in rows:
        turns = list(row.get(messages) or []) + [row.get("chosen"), row.get("rejected")]
        roles.update(t[role_tag] for t in turns if isinstance(t, dict) and isinstance(t.get(role_tag), str))
    return roles


def _sharegpt(rows, messages, sample, keys, stage, columns, where) -> Detected:
    first = sample[messages][0]
    role_tag, content_tag = next(pair for pair in ROLE_FAMILIES if pair[0] in first)
    tags = dict(ROLE_FAMILIES[(role_tag, content_tag)])
    tags["role_tag"], tags["content_tag"] = role_tag, content_tag
    roles = _roles(rows, messages, role_tag)
    if any(isinstance(t, dict) and t.get("tool_calls") for r in rows for t in r.get(messages) or []):
        raise LlfError(f"field {messages!r} holds OpenAI tool calls (\"tool_calls\"), which the sharegpt layout does not "
                       "read", where=where, key=messages,
                       fix="convert it first: llf-recipes convert FILE --kind openai_to_sharegpt -o OUT.jsonl")
    if role_tag == "from":
        tags["user_tag"] = "user" if "user" in roles and "human" not in roles else "human"
        tags["assistant_tag"] = "assistant" if "assistant" in roles and "gpt" not in roles else "gpt"
    else:
        tags["observation_tag"] = "observation" if "observation" in roles and "tool" not in roles else "tool"
        tags["function_tag"] = "function" if "function" in roles and "function_call" not in roles else "function_call"
    columns = {"messages": messages, **columns}
    layout = f"sharegpt ({role_tag}/{content_tag})"
    for extra in ("system", "tools"):
        if extra in keys and isinstance(sample.get(extra), str):
            columns[extra] = extra
    ranked = isinstance(sample.get("chosen"), dict) and isinstance(sample.get("rejected"), dict)
    if isinstance(sample.get("chosen"), str) and isinstance(sample.get("rejected"), str):
        raise LlfError("chosen/rejected are text; LLaMA-Factory's sharegpt ranking reads one message each "
                       f"({{\"{role_tag}\": ..., \"{content_tag}\": ...}})", where=where, key="chosen",
                       fix=f"write each as a message, e.g. \"chosen\": {{\"{role_tag}\": \"{tags['assistant_tag']}\", "
                           f"\"{content_tag}\": \"...\"}}")
    if isinstance(sample.get("chosen"), list) and isinstance(sample.get("rejected"), list):
        raise LlfError("chosen/rejected hold whole conversations; LLaMA-Factory's sharegpt ranking reads one message each",
                       where=where, key="chosen", fix="convert them: llf-recipes convert FILE --kind pairs -o OUT.jsonl")
    _stage_fits(stage, ranked, layout, where)
    if ranked:
        columns.update(chosen="chosen", rejected="rejected")
        layout += ", preference pairs"
    entry = {"formatting": "sharegpt", "ranking": ranked, "columns": columns,
             "tags": {k: tags[k] for k in TAGS}}
    return Detected(layout, entry)


def _alpaca(sample, keys, stage, columns, where) -> Detected:
    ranked = isinstance(sample.get("chosen"), str) and isinstance(sample.get("rejected"), str)
    prompt = _first(keys, PROMPT_NAMES)
    response = _first(keys, RESPONSE_NAMES)
    text = _first(keys, TEXT_NAMES)
    if stage == "pt" or (stage is None and not prompt and text):
        strings = [k for k in sorted(keys) if isinstance(sample.get(k), str)]
        column = text or (strings[0] if len(strings) == 1 else None)
        if not column:
            raise LlfError(f"stage pt reads one text column (e.g. \"text\"); the rows have {', '.join(sorted(keys))}",
                           where=where, key="text", fix="register with --columns prompt=FIELD")
        return Detected("plain text", {"formatting": "alpaca", "ranking": False, "columns": {"prompt": column, **columns}})
    if not prompt:
        raise LlfError(f"no prompt field: expected one of {', '.join(PROMPT_NAMES)} (alpaca), a messages list "
                       f"(sharegpt) or a text column; the rows have {', '.join(sorted(keys))}", where=where,
                       key="prompt", fix="name the fields with --columns prompt=FIELD,response=FIELD")
    out = {"prompt": prompt}
    if "input" in keys and prompt != "input":
        out["query"] = "input"
    layout = "alpaca"
    _stage_fits(stage, ranked, layout, where)
    if ranked:
        out.update(chosen="chosen", rejected="rejected")
        layout += ", preference pairs"
    elif response:
        out["response"] = response
    elif stage not in ("ppo", None):
        raise LlfError(f"no response field: expected one of {', '.join(RESPONSE_NAMES)}", where=where, key="response",
                       fix="name it with --columns response=FIELD")
    for extra in ("history", "system", "tools"):
        if extra in keys:
            out[extra] = extra
    return Detected(layout, {"formatting": "alpaca", "ranking": ranked, "columns": {**out, **columns}})


def _stage_fits(stage: str | None, ranked: bool, layout: str, where: str) -> None:
    if stage in ("rm", "dpo") and not ranked:
        raise LlfError(f"stage {stage} needs preference pairs (chosen/rejected); the rows are {layout} without them",
                       where=where, key="chosen",
                       fix="register it for --stage sft, or convert pairs: llf-recipes convert FILE --kind pairs")
    if stage in ("sft", "kto", "pt", "ppo") and ranked:
        raise LlfError(f"the rows are {layout} preference pairs, which stage {stage} does not read", where=where,
                       key="chosen", fix="register it for --stage dpo (or rm), or convert: llf-recipes convert FILE "
                                         "--kind pairs_to_sft (or pairs_to_kto)")


def apply_overrides(entry: dict[str, Any], *, formatting: str | None = None, columns: dict[str, str] | None = None,
                    tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Detection overridden by the user's --formatting, --columns, --tags (each key checked against LLaMA-Factory's)."""
    out = {**entry, "columns": dict(entry.get("columns") or {})}
    if formatting:
        out["formatting"] = formatting
    for given, allowed, what in ((columns, COLUMNS, "columns"), (tags, TAGS, "tags")):
        for key, value in (given or {}).items():
            if key not in allowed:
                from llf_recipes.suggest import nearest

                guess = nearest(key, allowed)
                raise LlfError(f"--{what}: {key!r} is not a LLaMA-Factory {what[:-1]}", key=key,
                               fix=f"did you mean {guess!r}?" if guess else f"{what} are {', '.join(allowed)}")
            out.setdefault(what, {})
            out[what] = {**out[what], key: value}
    if out.get("formatting") in ("sharegpt", "openai") and "tags" not in out:
        out["tags"] = dict(DEFAULT_TAGS)
    return out

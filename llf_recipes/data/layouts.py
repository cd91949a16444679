"""LLaMA-Factory's dataset semantics in one place: what an entry of dataset_info.json means, and what its converter and
stage processors make of each row.

Mirrors LLaMA-Factory 0.9.5 (`data/parser.py`, `data/converter.py`, `data/processor/*`):
  - an entry's `columns` or `tags` block replaces *all* defaults: a key it leaves out becomes None;
  - alpaca rows become prompt = history pairs + "prompt\\nquery", response = output | chosen+rejected | kto pair;
  - sharegpt/openai rows become role-aligned turns (user/observation at odd places, assistant/function at even), a
    leading system turn lifted out; a wrong role or turn count empties the row, which the stage then drops;
  - each stage keeps rows whose prompt has an odd turn count and whose response has what the stage needs.
A row that LLaMA-Factory would *stop* on (a missing column, text that is not text) raises `RowError`; a row it would
silently drop gets a reason in `Aligned.broken` or from `drop_reason`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError

FORMATTINGS = ("alpaca", "sharegpt", "openai")
COLUMNS = ("prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos", "audios",
           "chosen", "rejected", "kto_tag")
TAGS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")
DEFAULT_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "messages": "conversations"}
DEFAULT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}
HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url")
SOURCE_KEYS = (*HUB_KEYS, "script_url", "cloud_file_name", "file_name")
ENTRY_KEYS = (*SOURCE_KEYS, "formatting", "ranking", "subset", "split", "folder", "num_samples", "columns", "tags")
MEDIA = {"images": "<image>", "videos": "<video>", "audios": "<audio>"}
ALPACA_ONLY = ("prompt", "query", "response", "history")
SHAREGPT_ONLY = ("messages",)
STAGES = ("pt", "sft", "rm", "dpo", "kto", "ppo")


class RowError(LlfError):
    """A row LLaMA-Factory cannot read at all: training would stop on it."""


@dataclass(frozen=True)
class Layout:
    """One dataset_info.json entry as LLaMA-Factory reads it (its DatasetAttr), every default filled in."""

    load_from: str  # file | hf_hub | ms_hub | om_hub | script | cloud_file
    source: str
    formatting: str = "alpaca"
    ranking: bool = False
    subset: str | None = None
    split: str = "train"
    folder: str | None = None
    num_samples: int | None = None
    columns: dict[str, str | None] = field(default_factory=lambda: {c: DEFAULT_COLUMNS.get(c) for c in COLUMNS})
    tags: dict[str, str | None] = field(default_factory=lambda: dict(DEFAULT_TAGS))

    @classmethod
    def from_entry(cls, entry: Any, name: str = "entry") -> Layout:
        if not isinstance(entry, dict):
            raise LlfError(f"entry {name!r} must be a JSON object", key=name)
        for key in entry:  # LLaMA-Factory ignores other keys; one that is a near miss of its own is a typo
            if key not in ENTRY_KEYS:
                from llf_recipes.suggest import nearest

                guess = nearest(key, ENTRY_KEYS, cutoff=0.8)
                if guess:
                    raise LlfError(f"entry {name!r}: LLaMA-Factory ignores the key {key!r}", key=key,
                                   fix=f"did you mean {guess!r}?")
        kind = next((k for k in SOURCE_KEYS if k in entry), None)
        if kind is None:
            raise LlfError(f"entry {name!r} names no source", key=name, fix="give it a file_name (or hf_hub_url)")
        if kind in HUB_KEYS:  # LLaMA-Factory prefers hf unless only another hub is named (or its env var asks)
            kind = "hf_hub_url" if "hf_hub_url" in entry else kind
        load_from = {"hf_hub_url": "hf_hub", "ms_hub_url": "ms_hub", "om_hub_url": "om_hub", "script_url": "script",
                     "cloud_file_name": "cloud_file", "file_name": "file"}[kind]
        formatting = entry.get("formatting", "alpaca")
        if formatting not in FORMATTINGS:
            raise LlfError(f"entry {name!r}: formatting {formatting!r} is unknown", key="formatting",
                           fix=f"use one of {', '.join(FORMATTINGS)}")
        ranking = entry.get("ranking", False)
        if not isinstance(ranking, bool):
            raise LlfError(f"entry {name!r}: ranking must be true or false, got {ranking!r}", key="ranking")
        layout = cls(load_from, str(entry[kind]), formatting, ranking, entry.get("subset"), entry.get("split", "train"),
                     entry.get("folder"), entry.get("num_samples"))
        if "columns" in entry:
            layout = replace(layout, columns=_block(entry["columns"], COLUMNS, name, "columns"))
        if "tags" in entry:
            layout = replace(layout, tags=_block(entry["tags"], TAGS, name, "tags"))
        if layout.num_samples is not None and (not isinstance(layout.num_samples, int) or layout.num_samples < 1):
            raise LlfError(f"entry {name!r}: num_samples must be a positive whole number", key="num_samples")
        return layout

    def column(self, name: str) -> str | None:
        return self.columns.get(name)

    def meaning(self) -> tuple:
        """What LLaMA-Factory does with this entry: two entries with equal meanings load the same rows the same way."""
        unused = SHAREGPT_ONLY if self.formatting == "alpaca" else ALPACA_ONLY
        columns = tuple(sorted((k, v) for k, v in self.columns.items() if v and k not in unused))
        tags = () if self.formatting == "alpaca" else tuple(sorted(self.tags.items()))
        return (self.load_from, self.source, self.formatting, self.ranking, self.subset, self.split, self.folder,
                self.num_samples, columns, tags)


def _block(block: Any, allowed: tuple[str, ...], name: str, what: str) -> dict[str, str | None]:
    if not isinstance(block, dict):
        raise LlfError(f"entry {name!r}: {what} must be a JSON object", key=what)
    for key, value in block.items():
        if key not in allowed:
            from llf_recipes.suggest import nearest

            guess = nearest(key, allowed)
            raise LlfError(f"entry {name!r}: {key!r} is not a LLaMA-Factory {what[:-1]}", key=key,
                           fix=f"did you mean {guess!r}?" if guess else f"{what} are {', '.join(allowed)}")
        if value is not None and not isinstance(value, str):
            raise LlfError(f"entry {name!r}: {what}.{key} must be a field name (text), got {value!r}", key=key)
    return {k: block.get(k) for k in allowed}


def same_meaning(a: dict[str, Any], b: dict[str, Any]) -> bool:
    try:
        return Layout.from_entry(a).meaning() == Layout.from_entry(b).meaning()
    except LlfError:
        return a == b


def remote_dir(dataset_dir: str | Path) -> bool:
    """LLaMA-Factory's `dataset_dir: ONLINE` (names are hub datasets) or `REMOTE:<repo>` (dataset_info.json on the hub)."""
    return str(dataset_dir) == "ONLINE" or str(dataset_dir).startswith("REMOTE:")


def local_dir(dataset_dir: str | Path, verb: str) -> Path:
    if remote_dir(dataset_dir):
        raise LlfError(f"{verb} writes into a local data folder; {dataset_dir} tells LLaMA-Factory to read from the hub",
                       key="--data-dir", fix="give a folder (LLaMA-Factory's dataset_dir), e.g. --data-dir data")
    return Path(dataset_dir)


def resolve_source(layout: Layout, dataset_dir: str | Path) -> Path | None:
    """The local path LLaMA-Factory reads a file entry from (None for hub, script and cloud entries)."""
    if layout.load_from != "file":
        return None
    return Path(dataset_dir) / layout.source  # os.path.join: an absolute file_name wins


@dataclass
class Aligned:
    """A row after LLaMA-Factory's converter: what the stage processors see."""

    prompt: list[dict[str, Any]]
    response: list[dict[str, Any]]
    system: Any = ""
    tools: Any = ""
    media: dict[str, list | None] = field(default_factory=dict)
    broken: str | None = None  # why the converter emptied the row (LLaMA-Factory drops it with a warning)
    field: str | None = None


def _get(row: dict[str, Any], column: str, role: str, where: str) -> Any:
    if column not in row:
        raise RowError(f"field {column!r} ({role}) is not in the row", where=where, key=column)
    return row[column]


def _text(value: Any, column: str, role: str, where: str) -> Any:
    if value is not None and not isinstance(value, str):
        raise RowError(f"field {column!r} ({role}) must be text, got {type(value).__name__}", where=where, key=column)
    return value


def align(row: dict[str, Any], layout: Layout, where: str = "") -> Aligned:
    """The converter LLaMA-Factory picks for the entry's formatting, applied to one row (missing keys read as None,
    as they do once datasets has given every row the file's columns)."""
    if layout.formatting == "alpaca":
        aligned = _alpaca(row, layout, where)
    else:
        aligned = _chat(row, layout, where)
    aligned.media = {kind: _medias(row.get(layout.column(kind)), layout.column(kind), where)
                     for kind in MEDIA if layout.column(kind)}
    return aligned


def _alpaca(row: dict[str, Any], layout: Layout, where: str) -> Aligned:
    c = layout.column
    prompt: list[dict[str, Any]] = []
    if c("history") and isinstance(row.get(c("history")), list):
        for i, turn in enumerate(row[c("history")]):
            if not isinstance(turn, list | tuple) or len(turn) != 2:
                raise RowError(f"field {c('history')!r} (history) item {i} must be a [question, answer] pair",
                               where=where, key=c("history"))
            prompt += [{"role": "user", "content": _text(turn[0], c("history"), "history", where)},
                       {"role": "assistant", "content": _text(turn[1], c("history"), "history", where)}]
    query = []
    for name in ("prompt", "query"):
        if c(name):
            value = _text(row.get(c(name)), c(name), name, where)
            if value:
                query.append(value)
    prompt.append({"role": "user", "content": "\n".join(query)})
    kto = c("kto_tag") and row.get(c("kto_tag"))
    if c("kto_tag") and isinstance(row.get(c("kto_tag")), bool):
        answer = {"role": "assistant", "content": _text(row.get(c("response")), c("response") or "", "response", where)}
        empty = {"role": "assistant", "content": ""}
        response = [answer, empty] if kto else [empty, answer]
    elif layout.ranking and isinstance(row.get(c("chosen")), str) and isinstance(row.get(c("rejected")), str):
        response = [{"role": "assistant", "content": row[c("chosen")]}, {"role": "assistant", "content": row[c("rejected")]}]
    elif c("response") and isinstance(row.get(c("response")), str):
        response = [{"role": "assistant", "content": row[c("response")]}]
    else:
        response = []
    return Aligned(prompt, response, system=_text(row.get(c("system")), c("system"), "system", where) if c("system") else "",
                   tools=row.get(c("tools")) if c("tools") else "")


def _chat(row: dict[str, Any], layout: Layout, where: str) -> Aligned:
    c, t = layout.column, layout.tags
    column = c("messages")
    if not column:
        raise RowError("the entry maps no messages column", where=where, key="messages")
    messages = row.get(column)
    if messages is None:
        raise RowError(f"field {column!r} (messages) is missing", where=where, key=column)
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise RowError(f"field {column!r} (messages) must be a list of objects", where=where, key=column)
    role_tag, content_tag = t["role_tag"], t["content_tag"]
    for i, message in enumerate(messages):
        if role_tag not in message or content_tag not in message:
            raise RowError(f"field {column!r} message {i} has no {role_tag!r}/{content_tag!r} keys (it has "
                           f"{', '.join(map(repr, message)) or 'none'})", where=where, key=column)
        content = message[content_tag]
        if not isinstance(content, str) and not (layout.formatting == "openai" and message.get("tool_calls")):
            raise RowError(f"field {column!r} message {i} {content_tag!r} must be text, got {type(content).__name__}",
                           where=where, key=column)
    tag_mapping = {t["user_tag"]: "user", t["assistant_tag"]: "assistant", t["observation_tag"]: "observation",
                   t["function_tag"]: "function", t["system_tag"]: "system"}
    if t["system_tag"] and messages and messages[0][role_tag] == t["system_tag"]:
        system, messages = messages[0][content_tag], messages[1:]
    else:
        system = _text(row.get(c("system")), c("system"), "system", where) if c("system") else ""
    odd, even = (t["user_tag"], t["observation_tag"]), (t["assistant_tag"], t["function_tag"])
    broken = None
    if layout.formatting == "openai":
        aligned, broken = _openai_turns(messages, layout, tag_mapping)
    else:
        aligned = []
        for i, message in enumerate(messages):
            if message[role_tag] not in (odd, even)[i % 2]:
                broken = f"message {i} has role {message[role_tag]!r} where LLaMA-Factory expects " \
                         f"{' or '.join(repr(x) for x in (odd, even)[i % 2] if x)}"
                break
            aligned.append({"role": tag_mapping[message[role_tag]], "content": message[content_tag]})
    if broken is None and (len(aligned) % 2 == 0) == layout.ranking:
        broken = (f"{len(aligned)} turn(s) after the system prompt: "
                  + ("a ranking row needs an odd count (the pair is in chosen/rejected)" if layout.ranking
                     else "a row needs user/assistant pairs (an even count)"))
    tools = row.get(c("tools")) if c("tools") else ""
    if layout.formatting == "openai" and isinstance(tools, dict | list):
        tools = json.dumps(tools, ensure_ascii=False)  # the openai converter serialises a tool list itself
    if broken:
        return Aligned([], [], system, tools, broken=broken, field=column)
    kto = c("kto_tag") and row.get(c("kto_tag"))
    if c("kto_tag") and isinstance(row.get(c("kto_tag")), bool):
        empty = {"role": "assistant", "content": ""}
        return Aligned(aligned[:-1], aligned[-1:] + [empty] if kto else [empty] + aligned[-1:], system, tools)
    chosen, rejected = row.get(c("chosen")), row.get(c("rejected"))
    if layout.ranking and isinstance(chosen, dict) and isinstance(rejected, dict):
        response = []
        for name, message in (("chosen", chosen), ("rejected", rejected)):
            role = message.get(role_tag)
            if role not in tag_mapping or not isinstance(message.get(content_tag), str):
                raise RowError(f"field {c(name)!r} ({name}) must be a message with {role_tag!r} (one of "
                               f"{', '.join(repr(k) for k in tag_mapping if k)}) and text {content_tag!r}",
                               where=where, key=c(name))
            response.append({"role": tag_mapping[role], "content": message[content_tag]})
        return Aligned(aligned, response, system, tools)
    return Aligned(aligned[:-1], aligned[-1:], system, tools)


def _openai_turns(messages: list[dict], layout: Layout, tag_mapping: dict) -> tuple[list[dict], str | None]:
    t = layout.tags
    aligned: list[dict[str, Any]] = []
    pending: list[str] = []
    for message in messages:
        role, content = message[t["role_tag"]], message[t["content_tag"]]
        if role in (t["assistant_tag"], t["function_tag"]) and message.get("tool_calls"):
            content = json.dumps([call.get("function") for call in message["tool_calls"]], ensure_ascii=False)
            role = t["function_tag"]
        if role == t["observation_tag"]:
            pending.append(content)
            continue
        if pending:
            aligned.append({"role": "observation", "content": "\n</tool_response>\n<tool_response>\n".join(pending)})
            pending = []
        if role not in tag_mapping:
            return aligned, f"message role {role!r} is not one of {', '.join(repr(k) for k in tag_mapping if k)}"
        aligned.append({"role": tag_mapping[role], "content": content})
    for i, message in enumerate(aligned):
        if message["role"] not in (("user", "observation"), ("assistant", "function"))[i % 2]:
            return aligned, f"turn {i} has role {message['role']!r} out of order"
    return aligned, None


def _medias(value: Any, column: str | None, where: str) -> list | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    for item in items:
        frames = item if isinstance(item, list) else [item]
        if not all(isinstance(f, str | dict) for f in frames):
            raise RowError(f"field {column!r} must hold file paths", where=where, key=column)
    return items or None


def drop_reason(aligned: Aligned, stage: str) -> str | None:
    """Why the stage's processor drops the row (None: it keeps it). dpo reads through the rm processor."""
    if aligned.broken:
        return aligned.broken
    turns, answers = len(aligned.prompt), len(aligned.response)
    if stage == "pt":
        return None if turns else "no text"
    if turns % 2 != 1:
        return f"the prompt has {turns} turn(s); LLaMA-Factory needs an odd count ending with a user turn"
    if stage == "sft" and answers != 1:
        return "no response" if answers == 0 else f"{answers} responses where sft needs one (a kto or ranking row?)"
    if stage in ("rm", "dpo") and answers < 2:
        return "no chosen/rejected pair"
    if stage == "kto" and answers < 2:
        return "no true/false kto_tag"
    return None


def check_media(aligned: Aligned, base: Path, where: str) -> list[str]:
    """Problems LLaMA-Factory's multimodal plugin stops on: a missing file, or a placeholder count that differs."""
    problems = []
    for kind, items in aligned.media.items():
        for item in items or []:
            for frame in item if isinstance(item, list) else [item]:
                if kind == "videos" and isinstance(frame, str) and frame.startswith(("http://", "https://")):
                    continue  # LLaMA-Factory's video reader (PyAV) opens URLs; images and audios must be files
                if isinstance(frame, str) and not (base / frame).is_file() and not Path(frame).is_file():
                    problem = f"{kind[:-1]} file {frame!r} is not there (looked in {base} and the working folder)"
                    if problem not in problems:  # a row may show the same file twice
                        problems.append(problem)
        token, count = MEDIA[kind], len(items or [])
        for answer in aligned.response or [None]:
            messages = aligned.prompt + ([answer] if answer else [])
            found = sum(str(m["content"]).count(token) for m in messages)
            if found != count:
                problems.append(f"{count} {kind} but {found} {token} placeholder(s) in the messages")
                break
    return problems


def _calls_problem(content: str) -> str | None:
    text = content.split("</think>", 1)[-1] if "</think>" in content else content
    try:
        calls = json.loads(text)
    except json.JSONDecodeError:
        return "is not JSON"
    calls = calls if isinstance(calls, list) else [calls]
    if not all(isinstance(c, dict) and "name" in c and "arguments" in c for c in calls):
        return "needs \"name\" and \"arguments\""
    return None


def template_problem(aligned: Aligned) -> str | None:
    """What LLaMA-Factory's chat template stops on in a row it keeps: a function call or a tools list that is not JSON."""
    for i, message in enumerate(aligned.prompt + aligned.response):
        if message["role"] == "function" and isinstance(message["content"], str):
            problem = _calls_problem(message["content"])
            if problem:
                return f"turn {i} is a function call whose text {problem} (LLaMA-Factory parses it as a tool call)"
    if aligned.tools:
        if not isinstance(aligned.tools, str):
            return f"tools must be a JSON string, got {type(aligned.tools).__name__}"
        try:
            json.loads(aligned.tools)
        except json.JSONDecodeError:
            return "tools is not valid JSON (LLaMA-Factory parses it as the tool list)"
    return None

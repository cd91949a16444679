"""Conversions between chat layouts: message lists (role/content or from/value, OpenAI tool calls) and alpaca rows.

Every row either converts into one LLaMA-Factory reads as meant, or is a BadRow naming its line, field and message:
two user turns in a row, an answer before any question, a system turn in the middle, an unknown role, content that is
not text. Nothing is reordered or dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from llf_recipes.data.layouts import Layout, align, drop_reason
from llf_recipes.data.rows import BadRow

ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "system": "system",
         "function_call": "function", "function": "function", "observation": "observation", "tool": "observation"}
SHAREGPT_TAG = {"user": "human", "assistant": "gpt", "system": "system", "function": "function_call",
                "observation": "observation"}
MESSAGE_FIELDS = ("messages", "conversations")
SHAREGPT = Layout("file", "-", "sharegpt", columns={"messages": "conversations", "tools": "tools", "system": None,
                                                    **{c: None for c in ("prompt", "query", "response", "history")}})


def _field(row: dict[str, Any], where: str, name: str | None) -> tuple[str, list]:
    key = name or next((k for k in MESSAGE_FIELDS if k in row), MESSAGE_FIELDS[0])
    messages = row.get(key)
    if not isinstance(messages, list) or not messages:
        raise BadRow(f"field {key!r} must be a non-empty list of messages", where=where, key=key)
    return key, messages


def _content(value: Any, where: str, key: str, i: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                                       for p in value):
        return "".join(p["text"] for p in value)  # OpenAI content parts, text only
    raise BadRow(f"field {key!r} message {i}: content must be text, got {type(value).__name__}", where=where, key=key)


def turns(row: dict[str, Any], where: str, name: str | None = None) -> tuple[str, list[tuple[str, str]]]:
    """-> (field, [(role, text)]) with roles user/assistant/system/function/observation, from role/content or from/value."""
    key, messages = _field(row, where, name)
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRow(f"field {key!r} message {i} must be an object", where=where, key=key)
        role_key, text_key = ("role", "content") if "role" in m else ("from", "value")
        role = ROLES.get(m.get(role_key)) if isinstance(m.get(role_key), str) else None
        if role is None:
            raise BadRow(f"field {key!r} message {i}: role {m.get(role_key)!r} is not one of "
                         f"{', '.join(sorted(set(ROLES)))}", where=where, key=key)
        out.append((role, _content(m.get(text_key), where, key, i)))
    return key, out


def _pairs(key: str, chat: list[tuple[str, str]], where: str, prompt_only: bool) -> tuple[str, list[tuple[str, str]]]:
    """Split a user/assistant chat into (system, [(question, answer)]); the order must be what LLaMA-Factory trains on."""
    system = ""
    if chat and chat[0][0] == "system":
        system, chat = chat[0][1], chat[1:]
    for i, (role, _) in enumerate(chat):
        expected = ("user", "assistant")[i % 2]
        if role in ("function", "observation"):
            raise BadRow(f"field {key!r} turn {i} is a tool {role}, which alpaca rows cannot hold", where=where, key=key,
                         fix="keep the chat layout: convert with --kind openai_to_sharegpt (or register the file as it is)")
        if role != expected:
            what = {"system": "a system message after the first turn", "user": "two user turns in a row",
                    "assistant": "an assistant turn where a user turn belongs" if i == 0 else "two assistant turns in a row"}
            raise BadRow(f"field {key!r} turn {i}: {what[role]}", where=where, key=key)
    if not chat:
        raise BadRow(f"field {key!r} has no user turn", where=where, key=key)
    if len(chat) % 2:
        if not prompt_only:
            raise BadRow(f"field {key!r} ends with a user turn that has no answer", where=where, key=key,
                         fix="drop the row, or pass --option prompt_only=true for prompt-only data (ppo)")
        chat = [*chat, ("assistant", "")]
    return system, [(chat[i][1], chat[i + 1][1]) for i in range(0, len(chat), 2)]


KEPT_FIELDS = ("label", "kto_tag", "tag", "images", "videos", "audios")  # a kto true/false tag, media paths
MEDIA_FIELDS = ("images", "videos", "audios")


def kept_fields(row: dict[str, Any]) -> dict[str, Any]:
    """What every conversion to alpaca keeps of a row besides its text, as it is: a kto tag (label, kto_tag or tag)
    that is true or false, and media paths when there are any."""
    kept = {}
    for name in KEPT_FIELDS:
        value = row.get(name)
        if isinstance(value, bool) or (name in MEDIA_FIELDS and value):
            kept[name] = value
    return kept


def to_alpaca(row: dict[str, Any], where: str, field: str | None = None, prompt_only: bool = False) -> Iterator[dict]:
    """A message list (role/content or from/value) -> instruction / input / output, earlier turns as history. A kto
    true/false tag and media columns are kept as they are; a sharegpt preference row (chosen/rejected messages)
    becomes an alpaca preference row."""
    if isinstance(row.get("chosen"), dict) and isinstance(row.get("rejected"), dict):
        pair = chat_pair(row, where, "chosen", "rejected", field)
        out: dict[str, Any] = {"instruction": pair["prompt"], "input": "", "chosen": pair["chosen"],
                               "rejected": pair["rejected"]}
        out.update({k: pair[k] for k in ("history", "system") if k in pair})
    else:
        key, chat = turns(row, where, field)
        system, pairs = _pairs(key, chat, where, prompt_only)
        out = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1]}
        if len(pairs) > 1:
            out["history"] = [list(p) for p in pairs[:-1]]
        if system:
            out["system"] = system
    out.update(kept_fields(row))
    yield out


def chat_pair(row: dict[str, Any], where: str, good: str, bad: str, field: str | None = None) -> dict[str, Any]:
    """LLaMA-Factory's sharegpt preference row (`ranking: true`: the prompt turns in a message list, `chosen` and
    `rejected` one assistant message each) -> {prompt, chosen, rejected} plus history and system when present."""
    if field is None and not any(k in row for k in MESSAGE_FIELDS):
        raise BadRow(f"{good}/{bad} are single messages (the sharegpt preference layout), but the row has no "
                     f"{' or '.join(map(repr, MESSAGE_FIELDS))} list holding the prompt", where=where, key="conversations")
    key, chat = turns(row, where, field)
    system, pairs = _pairs(key, chat, where, prompt_only=True)
    if len(chat) % 2 == (0 if chat[0][0] != "system" else 1):  # it ends with an answer: none left to choose
        raise BadRow(f"field {key!r} ends with an assistant turn; in a preference row it ends with the user turn "
                     f"that {good!r} and {bad!r} answer", where=where, key=key)
    out: dict[str, Any] = {"prompt": pairs[-1][0]}
    for side, name in (("chosen", good), ("rejected", bad)):
        message = row[name]
        role_key, text_key = ("role", "content") if "role" in message else ("from", "value")
        text = message.get(text_key)
        role = message.get(role_key)
        if not isinstance(role, str) or ROLES.get(role) != "assistant" or not isinstance(text, str) or not text.strip():
            raise BadRow(f"field {name!r} must be one assistant message with text (e.g. {{\"from\": \"gpt\", "
                         f"\"value\": \"...\"}})", where=where, key=name)
        out[side] = text
    if len(pairs) > 1:
        out["history"] = [list(p) for p in pairs[:-1]]
    if system:
        out["system"] = system
    return out


def alpaca_to_sharegpt(row: dict[str, Any], where: str) -> Iterator[dict]:
    """instruction / input / output (history, system, chosen/rejected, label) -> conversations in from/value turns,
    joined the way LLaMA-Factory joins them (instruction, a line break, input)."""
    def text(key: str, required: bool = True) -> str:
        value = row.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str):
            raise BadRow(f"field {key!r} must be text, got {type(value).__name__}", where=where, key=key)
        return value

    conv = [{"from": "system", "value": text("system")}] if row.get("system") else []
    for i, pair in enumerate(row.get("history") or []):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise BadRow(f"field 'history' item {i} must be a [question, answer] pair of texts", where=where, key="history")
        conv += [{"from": "human", "value": pair[0]}, {"from": "gpt", "value": pair[1]}]
    question = "\n".join(t for t in (text("instruction"), text("input", required=False)) if t)
    if not question:
        raise BadRow("fields 'instruction' and 'input' are both empty", where=where, key="instruction")
    conv.append({"from": "human", "value": question})
    out: dict[str, Any] = {"conversations": conv}
    if "chosen" in row or "rejected" in row:
        out["chosen"] = {"from": "gpt", "value": text("chosen")}
        out["rejected"] = {"from": "gpt", "value": text("rejected")}
    else:
        conv.append({"from": "gpt", "value": text("output")})
    if "label" in row:
        if not isinstance(row["label"], bool):
            raise BadRow(f"field 'label' must be true or false, got {row['label']!r}", where=where, key="label")
        out["label"] = row["label"]
    yield out


def openai_to_sharegpt(row: dict[str, Any], where: str, field: str | None = None) -> Iterator[dict]:
    """OpenAI chat rows (system/user/assistant/tool messages, assistant `tool_calls`, a `tools` list) -> sharegpt
    from/value turns: calls become function_call turns of {"name", "arguments"}, tool results observation turns."""
    key, messages = _field(row, where, field)
    conv: list[dict[str, str]] = []
    results: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRow(f"field {key!r} message {i} must be an object with a role", where=where, key=key)
        role = m["role"]
        if role == "tool":
            results.append(_content(m.get("content"), where, key, i))
            continue
        if results:
            conv.append({"from": "observation", "value": _results(results)})
            results = []
        if role == "assistant" and m.get("tool_calls"):
            conv.append({"from": "function_call", "value": _calls(m["tool_calls"], where, key, i)})
        elif role in ("system", "user", "assistant"):
            conv.append({"from": SHAREGPT_TAG[role], "value": _content(m.get("content"), where, key, i)})
        else:
            raise BadRow(f"field {key!r} message {i}: role {role!r} is not system, user, assistant or tool",
                         where=where, key=key)
    if results:
        raise BadRow(f"field {key!r} ends with a tool result and no answer to it", where=where, key=key)
    out: dict[str, Any] = {"conversations": conv}
    tools = row.get("tools")
    if tools:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise BadRow("field 'tools' must be a list of tool definitions", where=where, key="tools")
        out["tools"] = json.dumps([t.get("function", t) for t in tools], ensure_ascii=False)
    reason = drop_reason(align(out, SHAREGPT, where), "sft")
    if reason:
        raise BadRow(f"field {key!r}: the turns are out of the order LLaMA-Factory trains on ({reason})", where=where,
                     key=key)
    yield out


def _results(results: list[str]) -> str:
    """One tool result as it is; several as one JSON list (each parsed when it is JSON itself)."""
    if len(results) == 1:
        return results[0]
    parsed = []
    for text in results:
        try:
            parsed.append(json.loads(text))
        except json.JSONDecodeError:
            parsed.append(text)
    return json.dumps(parsed, ensure_ascii=False)


def _calls(calls: Any, where: str, key: str, i: int) -> str:
    if not isinstance(calls, list):
        raise BadRow(f"field {key!r} message {i}: tool_calls must be a list", where=where, key=key)
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRow(f"field {key!r} message {i}: each tool call needs function.name", where=where, key=key)
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                raise BadRow(f"field {key!r} message {i}: tool call {fn['name']!r} has arguments that are not JSON",
                             where=where, key=key) from None
        out.append({"name": fn["name"], "arguments": args})
    return json.dumps(out[0] if len(out) == 1 else out, ensure_ascii=False)

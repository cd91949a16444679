"""dataset_info.json: read, merge and write entries without ever leaving a half-written or clobbered file.

Writers take a file lock beside the file, re-read it under the lock, write a temporary sibling, keep the previous
version as `dataset_info.json.bak`, and rename into place; a reader never sees a partial file, and concurrent
writers of different names all land.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from llf_recipes.atomic import write_text
from llf_recipes.errors import LlfError

INFO_NAME = "dataset_info.json"
ALL_COLUMNS = ("prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos", "audios",
               "chosen", "rejected", "kto_tag")
# Column mappings for a user's own alpaca-style file, by the stage it feeds.
STAGE_COLUMNS: dict[str, dict[str, str]] = {
    "pt": {"prompt": "text"},
    "sft": {"prompt": "instruction", "query": "input", "response": "output"},
    "ppo": {"prompt": "instruction", "query": "input"},
    "rm": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"},
    "dpo": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"},
    "kto": {"prompt": "instruction", "query": "input", "response": "output", "kto_tag": "label"},
}


@dataclass(frozen=True)
class Change:
    name: str
    action: str  # added | updated | unchanged
    old: dict[str, Any] | None
    new: dict[str, Any]


def read_info(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raise LlfError("starts with a UTF-8 byte-order mark, which LLaMA-Factory's json.load rejects", where=str(path),
                       fix="save the file as UTF-8 without BOM")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LlfError(f"is not valid UTF-8 (byte {exc.start})", where=str(path)) from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LlfError(f"invalid JSON: {exc.msg}", where=f"{path}:{exc.lineno}:{exc.colno}",
                       fix=f"repair it (the previous version may be in {path.name}.bak); nothing was written") from None
    if not isinstance(data, dict):
        raise LlfError("must hold a JSON object of name -> entry", where=str(path))
    return data


def parse_columns(spec: str | None) -> dict[str, str]:
    """`prompt=question,response=answer` -> {"prompt": "question", "response": "answer"}."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        if "=" not in item:
            raise LlfError(f"--columns item {item!r} is not COLUMN=FIELD", key="--columns", fix="e.g. --columns prompt=question,response=answer")
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return out


def user_entry(file: str, stage: str, columns: dict[str, str] | None = None, formatting: str = "alpaca") -> dict[str, Any]:
    """A complete entry for a user's own file: every column named (LLaMA-Factory resets unnamed ones to None)."""
    if stage not in STAGE_COLUMNS:
        raise LlfError(f"stage {stage!r} is unknown", key="--stage", fix=f"use one of {', '.join(STAGE_COLUMNS)}")
    if formatting == "sharegpt":
        mapping = {"messages": "conversations", "system": "system", "tools": "tools"}
        if stage in ("rm", "dpo"):
            mapping.update(chosen="chosen", rejected="rejected")
    else:
        mapping = dict(STAGE_COLUMNS[stage])
    for key, value in (columns or {}).items():
        if key not in ALL_COLUMNS:
            from llf_recipes.suggest import nearest

            guess = nearest(key, ALL_COLUMNS)
            raise LlfError(f"--columns: {key!r} is not a LLaMA-Factory column", key=key,
                           fix=f"did you mean {guess!r}?" if guess else f"columns are {', '.join(ALL_COLUMNS)}")
        mapping[key] = value
    entry: dict[str, Any] = {"file_name": file, "formatting": formatting, "ranking": stage in ("rm", "dpo"),
                             "columns": mapping}
    if formatting == "sharegpt":
        entry["tags"] = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                         "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
    return entry


def plan_changes(current: dict[str, Any], entries: dict[str, dict[str, Any]], force: bool) -> list[Change]:
    changes = []
    for name, entry in entries.items():
        old = current.get(name)
        if old is None:
            changes.append(Change(name, "added", None, entry))
        elif old == entry:
            changes.append(Change(name, "unchanged", old, entry))
        elif not force:
            raise LlfError(f"{name!r} is already registered with a different definition",
                           key=name, fix="pass --force to replace it, or register under another --name")
        else:
            changes.append(Change(name, "updated", old, entry))
    return changes


def register(data_dir: str | Path, entries: dict[str, dict[str, Any]], *, force: bool = False, dry_run: bool = False,
             timeout: float = 60) -> list[Change]:
    """Merge `entries` into `<data_dir>/dataset_info.json`, leaving every other entry untouched."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / INFO_NAME
    with FileLock(str(path) + ".lock", timeout=timeout):
        current = read_info(path)
        changes = plan_changes(current, entries, force)
        if dry_run or all(c.action == "unchanged" for c in changes):
            return changes
        merged = dict(current)
        for c in changes:
            merged[c.name] = c.new
        if path.exists():
            backup = path.with_name(INFO_NAME + ".bak")
            tmp = backup.with_name(f".{backup.name}.{os.getpid()}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, backup)
        write_text(path, json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
    return changes

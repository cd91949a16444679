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

from llf_recipes.atomic import recover, write_text
from llf_recipes.data.layouts import COLUMNS, same_meaning
from llf_recipes.errors import LlfError

INFO_NAME = "dataset_info.json"
ALL_COLUMNS = COLUMNS


@dataclass(frozen=True)
class Change:
    name: str
    action: str  # added | updated | unchanged
    old: dict[str, Any] | None
    new: dict[str, Any]


def read_info(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    if path.is_dir():
        raise LlfError(f"is a directory; LLaMA-Factory reads {INFO_NAME} as a file", where=str(path),
                       fix="move the directory away (its files may belong in the data dir itself)")
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
    except RecursionError:
        raise LlfError("is nested too deeply to be a name -> entry map", where=str(path),
                       fix=f"repair it (the previous version may be in {path.name}.bak)") from None
    except json.JSONDecodeError as exc:
        raise LlfError(f"invalid JSON: {exc.msg}", where=f"{path}:{exc.lineno}:{exc.colno}",
                       fix=f"repair it (the previous version may be in {path.name}.bak); nothing was written") from None
    if not isinstance(data, dict):
        raise LlfError("must hold a JSON object of name -> entry", where=str(path))
    return data


def parse_columns(spec: str | None, option: str = "--columns") -> dict[str, str]:
    """`prompt=question,response=answer` -> {"prompt": "question", "response": "answer"}."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        if "=" not in item:
            raise LlfError(f"{option} item {item!r} is not NAME=VALUE", key=option,
                           fix="e.g. --columns prompt=question,response=answer or --tags role_tag=role,content_tag=text")
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return out


def plan_changes(current: dict[str, Any], entries: dict[str, dict[str, Any]], force: bool) -> list[Change]:
    changes = []
    for name, entry in entries.items():
        old = current.get(name)
        if old is None:
            changes.append(Change(name, "added", None, entry))
        elif old == entry or same_meaning(old, entry):
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
    lock = Path(str(path) + ".lock")
    if lock.is_dir():
        raise LlfError("is a directory; it must be a lock file (or absent)", where=str(lock),
                       fix="remove it (rmdir) and run again")
    with FileLock(str(lock), timeout=timeout):
        recover([path, path.with_name(INFO_NAME + ".bak")])  # what a killed writer left
        current = read_info(path)
        changes = plan_changes(current, entries, force)
        if dry_run or all(c.action == "unchanged" for c in changes):
            return changes
        merged = dict(current)
        for c in changes:
            if c.action != "unchanged":  # an entry that already means the same stays as the user wrote it
                merged[c.name] = c.new
        if path.exists():
            backup = path.with_name(INFO_NAME + ".bak")
            tmp = backup.with_name(f".{backup.name}.{os.getpid()}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, backup)
        write_text(path, json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
    return changes

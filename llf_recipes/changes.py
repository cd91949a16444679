"""Why a completed stage runs again: the config keys, dataset files and earlier stages that differ from what its
manifest recorded, named in a line."""

from __future__ import annotations

import json
from typing import Any

SHOWN = 3  # changed keys named one by one; the rest are counted
VALUE_WIDTH = 24


def _value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else value
    return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 3] + "..."


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def config_changes(previous: dict[str, Any], config: dict[str, Any], ignored: set[str]) -> list[str]:
    """`key old -> new` for each key whose value differs (`key set to`, `key removed` where one side lacks it)."""
    out = []
    for key in sorted((set(previous) | set(config)) - ignored):
        if key not in config:
            out.append(f"{key} removed")
        elif key not in previous:
            out.append(f"{key} set to {_value(config[key])}")
        elif _canon(previous[key]) != _canon(config[key]):
            out.append(f"{key} {_value(previous[key])} -> {_value(config[key])}")
    return out


def dataset_changes(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    out = []
    for name in sorted(set(previous) | set(current)):
        old, new = previous.get(name) or {}, current.get(name) or {}
        if name not in previous:
            out.append(f"dataset {name} added")
        elif name not in current:
            out.append(f"dataset {name} removed")
        elif old.get("file") != new.get("file"):
            out.append(f"dataset {name} now read from {new.get('file')}")
        elif (old.get("sha256"), old.get("source")) != (new.get("sha256"), new.get("source")):
            out.append(f"dataset {name} changed ({new.get('file') or new.get('source')})")
    return out


def input_changes(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    out = []
    for name in sorted(set(previous) | set(current)):
        if previous.get(name) != current.get(name):
            out.append(f"stage {name} ran again" if name in previous and name in current else f"stage {name} read")
    return out


def reason(previous: dict[str, Any], current: dict[str, Any], config: dict[str, Any], ignored: set[str]) -> str:
    """What changed between the last run's manifest `previous` and now (`current`: the stage's fingerprint, `config`:
    its rendered config), as `run` and `run --dry-run` say it."""
    parts = []
    if previous.get("config_hash") != current.get("config_hash"):
        old = previous.get("config")
        keys = config_changes(old, config, ignored) if isinstance(old, dict) else []
        more = f" and {len(keys) - SHOWN} more key(s)" if len(keys) > SHOWN else ""
        parts.append("config: " + ", ".join(keys[:SHOWN]) + more if keys else "the config")
    parts += dataset_changes(previous.get("datasets") or {}, current.get("datasets") or {})
    parts += input_changes(previous.get("inputs") or {}, current.get("inputs") or {})
    if not parts:
        return "the config, data or an earlier stage changed since the last run"
    return "changed since the last run: " + "; ".join(parts)

"""LLaMA-Factory's argument snapshot: every key per verb, its value kinds, default and choices (no torch needed)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent
SUPPORTED_VERSION = "0.9.5"
# llamafactory-cli verbs -> the argument set they parse
VERB_ARGS = {"train": "train", "export": "infer", "chat": "infer", "api": "infer", "webchat": "infer"}


@cache
def load_snapshot(version: str = SUPPORTED_VERSION) -> dict[str, Any]:
    path = SCHEMA_DIR / f"llamafactory-{version}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def keys_for(verb: str, version: str = SUPPORTED_VERSION) -> dict[str, dict[str, Any]]:
    return load_snapshot(version)["verbs"][VERB_ARGS.get(verb, verb)]

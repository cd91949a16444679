"""The dataset entry of preference pairs built from a model's own answers (the `pairs` verb and a recipe's pairs
stage): ShareGPT-shaped rows with role/content messages, `chosen` and `rejected` answers, `ranking: true`."""

from __future__ import annotations

from typing import Any

ENTRY_COLUMNS = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "system": "system"}
ENTRY_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
              "system_tag": "system"}


def entry(file_name: str) -> dict[str, Any]:
    return {"file_name": file_name, "formatting": "sharegpt", "ranking": True, "columns": dict(ENTRY_COLUMNS),
            "tags": dict(ENTRY_TAGS)}


def registered_by(verb: str, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The dataset a recipe stage registers when it runs, {dataset_dir: {name: entry}}: a pairs stage registers NAME
    in its own output directory (so a later stage that trains on it validates before it exists)."""
    if verb != "pairs" or not config.get("name") or not config.get("output_dir"):
        return {}
    return {str(config["output_dir"]): {str(config["name"]): entry(f"{config['name']}.json")}}

"""A plain LLaMA-Factory YAML (what `llamafactory-cli train FILE` takes) read as a one-stage recipe.

So `render`, `validate` and `run` take LLaMA-Factory's own example files as they are: the stage is the file's text
verbatim (no template expressions), its verb is inferred from its keys, and every value it writes is kept, its batch
sizes, output_dir and deepspeed included. `--set` works as for any recipe; DeepSpeed is added only on request
(`--set deepspeed=z2`), as `llamafactory-cli` would run the file without one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from llf_recipes import yamlio
from llf_recipes.errors import LlfError
from llf_recipes.recipe import BASE_VARS, HEADER_KEYS, Recipe, Stage, split_documents

ORIGIN = "LLaMA-Factory YAML"
# Keys that make a plain YAML a training config: `llamafactory-cli chat/export` takes none of them.
TRAIN_MARKERS = ("stage", "do_train", "do_eval", "do_predict", "output_dir")


def infer_verb(config: dict[str, Any]) -> str:
    """The llamafactory-cli verb a plain YAML is written for: export_dir -> export, a stage or a training switch ->
    train, otherwise chat (so a stray training key in a chat config is reported, not taken as a training run)."""
    if "export_dir" in config:
        return "export"
    if any(key in config for key in TRAIN_MARKERS):
        return "train"
    return "chat"


def is_plain(text: str, where: str = "<yaml>") -> bool:
    """One YAML document that is not a recipe header (no `stages:`, and some key a header does not have): a file for
    llamafactory-cli, not a recipe. A document that is not valid YAML is an error naming `where` and its line, not a
    recipe with a missing header."""
    docs = [(doc, line) for doc, line in split_documents(text) if doc.strip()]
    if len(docs) != 1:
        return False
    doc, line = docs[0]
    data = yamlio.load(doc, where=where, first_line=line)
    return isinstance(data, dict) and "stages" not in data and not set(data) <= HEADER_KEYS


def plain_recipe(path: Path, text: str, verb: str | None = None) -> Recipe:
    config = yamlio.load(text, where=str(path)) or {}
    if not isinstance(config, dict):
        raise LlfError("a LLaMA-Factory config must be a mapping of keys", where=str(path))
    if "{% endraw %}" in text:
        raise LlfError("a LLaMA-Factory YAML may not contain `{% endraw %}`", where=str(path))
    verb = verb or infer_verb(config)
    name = str(config.get("stage") or "sft") if verb == "train" else verb
    stage = Stage(name=name, template="{% raw %}" + text + "{% endraw %}", index=0, first_line=1, verb=verb,
                  description=f"llamafactory-cli {verb} {path}")
    return Recipe(
        name=path.name.removesuffix(".yaml").removesuffix(".yml"),
        path=path,
        description=f"{path.name}, a plain LLaMA-Factory config run as one stage",
        datasets=tuple(_names(config.get("dataset"))),
        tags=(),
        # the file's keys are its own (dataset_dir included): only what is decided outside it is a variable
        vars={"output_root": BASE_VARS["output_root"], "deepspeed": "none", "offload": False},
        stages=(stage,),
        origin=ORIGIN,
        text_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        plain=True,
    )


def _names(value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value or "").split(",")
    return [str(item).strip() for item in items if str(item).strip()]

"""The recipe model.

A recipe is one YAML file: a header document (description, datasets, variables, the ordered stages) followed by one
document per stage, each a LLaMA-Factory config written in LLaMA-Factory's own layout with Jinja where values vary.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llf_recipes import yamlio
from llf_recipes.errors import LlfError
from llf_recipes.suggest import nearest

DOC_SEP = re.compile(r"^---[ \t]*$", re.MULTILINE)
HEADER_KEYS = {"description", "datasets", "tags", "vars", "stages", "notes"}
STAGE_KEYS = {"name", "description", "verb", "global_batch_size", "micro_batch_size", "engine"}
# grpo: a GRPO stage run by EasyR1 or TRL (llf_recipes/grpo/); generate, score, judge, pairs: llf-recipes' own verbs
# as stages (llf_recipes/engines/llf.py)
VERBS = ("train", "export", "chat", "grpo", "generate", "score", "judge", "pairs")
# Variables every recipe has; a recipe's own `vars` may change their defaults.
HEADER_FIX = ("start the file with a header (description: ..., stages: [{name: sft}]) and a `---` line before each "
              "stage's config; a plain LLaMA-Factory YAML (one document, no header) runs as it is")
BASE_VARS: dict[str, Any] = {
    "output_root": "saves",
    "dataset_dir": "data",
    "precision": "bf16",  # bf16 | fp16 | fp32; bf16 needs Ampere or newer (or Ascend 910B)
    "global_batch_size": 16,
    "micro_batch_size": 4,
    "deepspeed": "auto",  # auto | none | z0 | z1 | z2 | z2_offload | z3 | z3_offload | a JSON path
    "offload": False,
}


@dataclass(frozen=True)
class Stage:
    name: str
    template: str
    index: int
    first_line: int  # line of the template's first line in the recipe file
    verb: str = "train"
    description: str = ""
    global_batch_size: int | None = None
    micro_batch_size: int | None = None
    engine: str | None = None  # the engine that runs it (llf_recipes/engines); None: its stage's default


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    description: str
    datasets: tuple[str, ...]
    tags: tuple[str, ...]
    vars: dict[str, Any]
    stages: tuple[Stage, ...]
    notes: str = ""
    origin: str = "bundled"
    text_hash: str = field(default="", compare=False)
    plain: bool = False  # a plain LLaMA-Factory YAML run as one stage (plain_config.py): its batch sizes are its own

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        names = [s.name for s in self.stages]
        raise LlfError(
            f"recipe {self.name!r} has no stage {name!r}",
            key="--stage",
            fix=f"stages are: {', '.join(names)}" + (f" (did you mean {nearest(name, names)!r}?)" if nearest(name, names) else ""),
        )


def split_documents(text: str) -> list[tuple[str, int]]:
    """Split on `---` lines; return (document text, 1-based line of its first line)."""
    docs: list[tuple[str, int]] = []
    start, line = 0, 1
    for match in DOC_SEP.finditer(text):
        docs.append((text[start:match.start()], line))
        line += text.count("\n", start, match.end()) + 1
        start = match.end() + 1
    docs.append((text[start:], line))
    return docs


def _check_stage_name(name: str, where: str) -> None:
    """A stage name is a directory name (OUTPUT_ROOT/RECIPE/STAGE) and the STAGE of `--set STAGE.KEY=VALUE`."""
    if not name.strip() or any(c in name for c in "./\\"):
        raise LlfError(f"stage name {name!r} may not be empty or contain '.', '/' or '\\'", key="stages", where=where,
                       fix="--set STAGE.KEY=VALUE splits at the first dot and the name is a directory: use letters, "
                           "digits, '-' and '_' (e.g. v1_5)")


def _check_keys(mapping: dict, allowed: set[str], where: str, what: str) -> None:
    for key in mapping:
        if key not in allowed:
            guess = nearest(str(key), allowed)
            raise LlfError(
                f"unknown {what} key {key!r}",
                key=str(key),
                where=where,
                fix=f"did you mean {guess!r}?" if guess else f"allowed keys: {', '.join(sorted(allowed))}",
            )


def load_recipe(path: str | Path, origin: str = "bundled") -> Recipe:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise LlfError(f"is not UTF-8 text (byte {exc.start})", where=f"{path}:{line}",
                       fix="save the recipe as UTF-8") from None
    docs = split_documents(text)
    if docs and not docs[0][0].strip():
        docs = docs[1:]  # a file may start with `---`
    if len(docs) < 2:
        raise LlfError("a recipe needs a header document and at least one stage document separated by `---`",
                       where=str(path), fix=HEADER_FIX)
    header_text, header_line = docs[0]
    header = yamlio.load(header_text, where=str(path)) or {}
    if not isinstance(header, dict):
        raise LlfError("the header document must be a mapping", where=f"{path}:{header_line}")
    if "stages" not in header and set(header) - HEADER_KEYS:
        raise LlfError("the first document is a config, not a recipe header (it has no `stages`)",
                       where=f"{path}:{header_line}", fix=HEADER_FIX)
    _check_keys(header, HEADER_KEYS, str(path), "recipe header")
    raw_stages = header.get("stages") or []
    if not isinstance(raw_stages, list) or not raw_stages:
        raise LlfError("`stages` must list the stages in order", key="stages", where=str(path), fix="e.g. stages: [{name: sft}]")
    templates = docs[1:]
    if len(raw_stages) != len(templates):
        raise LlfError(
            f"`stages` lists {len(raw_stages)} stage(s) but the file has {len(templates)} stage document(s)",
            key="stages",
            where=str(path),
            fix="write one `---`-separated document per stage, in the order of `stages`",
        )
    stages: list[Stage] = []
    for index, (entry, (body, line)) in enumerate(zip(raw_stages, templates)):
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or "name" not in entry:
            raise LlfError(f"stage {index + 1} needs a name", key="stages", where=str(path))
        _check_keys(entry, STAGE_KEYS, f"{path} (stage {entry['name']})", "stage")
        _check_stage_name(str(entry["name"]), f"{path}:{header_line}")
        verb = entry.get("verb", "train")
        if verb not in VERBS:
            raise LlfError(f"stage {entry['name']!r}: verb {verb!r} is unknown", key="verb", where=str(path), fix=f"use one of {', '.join(VERBS)}")
        if entry["name"] in {s.name for s in stages}:
            raise LlfError(f"stage name {entry['name']!r} is used twice", key="stages", where=str(path))
        stages.append(
            Stage(
                name=str(entry["name"]),
                template=body,
                index=index,
                first_line=line,
                verb=verb,
                description=str(entry.get("description", "")),
                global_batch_size=entry.get("global_batch_size"),
                micro_batch_size=entry.get("micro_batch_size"),
                engine=_engine_name(entry.get("engine"), path, entry["name"]),
            )
        )
    variables = dict(BASE_VARS)
    if not isinstance(header.get("vars") or {}, dict):
        raise LlfError("`vars` must be a mapping of name: value", key="vars", where=str(path),
                       fix="e.g. vars: {template: qwen}")
    variables.update(header.get("vars") or {})
    return Recipe(
        name=path.name.removesuffix(".yaml").removesuffix(".yml"),
        path=path,
        description=str(header.get("description", "")).strip(),
        datasets=tuple(header.get("datasets") or ()),
        tags=tuple(header.get("tags") or ()),
        vars=variables,
        stages=tuple(stages),
        notes=str(header.get("notes", "")).strip(),
        origin=origin,
        text_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def _engine_name(name: Any, path: Path, stage: str) -> str | None:
    if name is None:
        return None
    from llf_recipes import engines

    try:
        return engines.get(str(name)).name
    except LlfError as exc:
        exc.where, exc.message = str(path), f"stage {stage!r}: {exc.message}"
        raise

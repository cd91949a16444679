"""Check rows against what a LLaMA-Factory stage needs, through an entry's column mapping (alpaca formatting)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llf_recipes.data.rows import BadRow, iter_rows
from llf_recipes.errors import LlfError

# stage -> columns that must hold non-empty text
NEEDS = {
    "pt": ("prompt",),
    "sft": ("prompt", "response"),
    "ppo": ("prompt",),
    "rm": ("prompt", "chosen", "rejected"),
    "dpo": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "response"),
}


@dataclass
class CheckReport:
    rows: int = 0
    bad: list[BadRow] = field(default_factory=list)
    preview: list[dict[str, Any]] = field(default_factory=list)


def _problem(row: dict[str, Any], stage: str, columns: dict[str, Any], where: str) -> BadRow | None:
    for column in NEEDS[stage]:
        source = columns.get(column)
        if not source:
            raise LlfError(f"stage {stage} needs the {column!r} column, which the entry does not map", key=column,
                           fix=f"register the data with --columns {column}=FIELD")
        value = row.get(source)
        if value is None:
            return BadRow(f"field {source!r} ({column}) is missing", where=where, key=source)
        if not isinstance(value, str):
            return BadRow(f"field {source!r} ({column}) must be text, got {type(value).__name__}", where=where, key=source)
        if not value.strip():
            return BadRow(f"field {source!r} ({column}) is empty", where=where, key=source)
    query = columns.get("query")
    if query and row.get(query) is not None and not isinstance(row.get(query), str):
        return BadRow(f"field {query!r} (query) must be text", where=where, key=query)
    if stage == "kto":
        tag = columns.get("kto_tag")
        if not tag:
            raise LlfError("stage kto needs a kto_tag column", key="kto_tag", fix="register with --columns kto_tag=FIELD")
        if not isinstance(row.get(tag), bool):
            return BadRow(f"field {tag!r} (kto_tag) must be true or false, got {row.get(tag)!r}", where=where, key=tag)
    history = columns.get("history")
    if history and row.get(history) is not None:
        turns = row[history]
        if not isinstance(turns, list) or not all(isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in turns):
            return BadRow(f"field {history!r} (history) must be a list of [question, answer] pairs", where=where, key=history)
    return None


def check_file(path: str | Path, stage: str, entry: dict[str, Any], preview: int = 0, keep: int = 10) -> CheckReport:
    if stage not in NEEDS:
        raise LlfError(f"stage {stage!r} is unknown", key="--stage", fix=f"use one of {', '.join(NEEDS)}")
    if entry.get("formatting", "alpaca") != "alpaca":
        raise LlfError("check reads alpaca-formatted entries", key="formatting", fix="convert the data with `llf-recipes convert`")
    ranked = stage in ("rm", "dpo")
    if bool(entry.get("ranking", False)) != ranked:
        fits = (["dpo", "rm"] if entry.get("ranking") else
                ["kto"] if "kto_tag" in (entry.get("columns") or {}) else ["sft", "pt", "ppo"])
        kind = "preference pairs (chosen/rejected)" if ranked else "single answers"
        raise LlfError(f"entry has ranking: {bool(entry.get('ranking', False))}, stage {stage} needs ranking: {ranked}",
                       key="ranking",
                       fix=f"its rows fit stage {' or '.join(fits)}: check it with --stage {fits[0]}, or give "
                           f"stage {stage} a dataset of {kind}")
    columns = entry.get("columns") or {}
    report = CheckReport()
    parse_errors: list[BadRow] = []
    for where, row in iter_rows(path, parse_errors):
        report.rows += 1
        problem = _problem(row, stage, columns, where)
        if problem is not None:
            report.bad.append(problem)
        elif len(report.preview) < preview:
            report.preview.append({col: row.get(src) for col, src in columns.items() if src and row.get(src) not in (None, "")})
    report.rows += len(parse_errors)
    report.bad = parse_errors + report.bad
    return report

"""Check a dataset entry's rows as LLaMA-Factory will read them for a stage: usable rows counted exactly, the rows its
converter or stage processor would drop listed with line and reason, and the rows it would stop on as errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llf_recipes.data.layouts import (
    MEDIA,
    STAGES,
    Aligned,
    Layout,
    RowError,
    align,
    check_media,
    drop_reason,
    remote_dir,
    resolve_source,
    template_problem,
)
from llf_recipes.data.rows import BadRow, iter_rows
from llf_recipes.errors import LlfError

NEEDS = {stage: () for stage in STAGES}  # the stages `check --stage` accepts
# `{{name}}` and `{{author}}` in a row are the blanks LLaMA-Factory's identity.json ships with for the user to fill in;
# nothing fills them at training time, so the model learns the braces. Other {{...}} are left alone: rows that teach
# Jinja, Vue or Handlebars hold them on purpose.
PLACEHOLDER = re.compile(r"\{\{\s*(name|author)\s*\}\}")
KINDS = {str: "text", bool: "true/false", int: "number", float: "number", list: "list", dict: "object"}


@dataclass
class CheckReport:
    path: Path | None = None
    rows: int = 0
    usable: int = 0
    dropped: list[BadRow] = field(default_factory=list)  # rows LLaMA-Factory drops (it warns and goes on)
    errors: list[LlfError] = field(default_factory=list)  # rows LLaMA-Factory stops on
    warnings: list[BadRow] = field(default_factory=list)  # rows it keeps that teach little (an empty prompt or answer)
    preview: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None  # why nothing was checked (a hub dataset not in the local cache)
    hint: str | None = None  # when no row is usable: the layout the rows look like, and what to run
    sampled: int | None = None
    placeholders: dict[str, int] = field(default_factory=dict)  # {{name}}/{{author}} in usable rows -> rows holding it
    placeholder_at: str | None = None  # the first row holding one
    placeholder_rows: int = 0

    @property
    def bad(self) -> list[LlfError]:
        return self.errors + self.dropped


def required_columns(layout: Layout) -> list[str]:
    """The mapped columns LLaMA-Factory's converter indexes on every row: absent from the file, it stops (KeyError)."""
    names = ["system", "tools", *MEDIA, "kto_tag"]
    if layout.formatting == "alpaca":
        names += ["prompt", "query", "history"] + (["chosen", "rejected"] if layout.ranking else ["response"])
    else:
        names += ["messages"] + (["chosen", "rejected"] if layout.ranking else [])
    return [n for n in names if layout.column(n)]


def preview_row(aligned: Aligned) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt": aligned.prompt, "response": aligned.response}
    if aligned.system:
        out["system"] = aligned.system
    if aligned.tools:
        out["tools"] = aligned.tools
    out.update({k: v for k, v in aligned.media.items() if v})
    return out


def _empty_text(aligned: Aligned, stage: str) -> str | None:
    if not aligned.prompt or not str(aligned.prompt[-1]["content"]).strip():
        return "the prompt is empty"
    if stage != "pt" and stage != "ppo" and not any(str(r["content"]).strip() for r in aligned.response):
        return "the response is empty"
    return None


def check_file(path: str | Path, stage: str, entry: dict[str, Any] | Layout, *, preview: int = 0, keep: int = 50,
               media_base: str | Path | None = None, name: str = "entry", fix: str | None = None,
               limit: int | None = None) -> CheckReport:
    """Every row of `path` (a file or a folder; the first `limit` rows if given) through `entry`'s layout for `stage`."""
    if stage not in STAGES:
        raise LlfError(f"stage {stage!r} is unknown", key="--stage", fix=f"use one of {', '.join(STAGES)}")
    layout = entry if isinstance(entry, Layout) else Layout.from_entry(entry, name)
    if layout.ranking != (stage in ("rm", "dpo")):
        raise LlfError(f"entry {name!r} has ranking: {str(layout.ranking).lower()}, and LLaMA-Factory refuses it for "
                       f"stage {stage} (\"The dataset is not applicable in the current training stage\")", key="ranking",
                       fix="rm and dpo read ranking entries (chosen/rejected); pt, sft, kto and ppo read the others")
    path = Path(path)
    if layout.formatting != "alpaca" and not layout.column("messages"):
        raise LlfError(f"entry {name!r} is {layout.formatting} but maps no messages column (a columns block without "
                       "\"messages\" resets it)", key="columns", where=str(path),
                       fix=f"add \"messages\": \"FIELD\" to its columns, or: llf-recipes register --file {path} "
                           f"--name {name} --stage {stage} --force")
    if layout.split != "train":
        raise LlfError(f"entry {name!r} asks for split {layout.split!r}, and a local file has only 'train'", key="split",
                       fix="drop the split key")
    base = Path(media_base) if media_base is not None else path.parent
    report = CheckReport(path=path, sampled=layout.num_samples)
    parse_errors: list[BadRow] = []
    seen: dict[str, tuple[str, str]] = {}  # column -> (kind, where first seen)
    first_rows: list[dict[str, Any]] = []
    kto = _KtoNeighbours(report) if stage == "kto" else None
    for where, row in iter_rows(path, parse_errors, csv_empty_none=True):
        if limit is not None and report.rows >= limit:
            break
        report.rows += 1
        if len(first_rows) < 20:
            first_rows.append(row)
        mixed = _mixed_kind(row, seen, where, len(str(path)) + 1)
        if mixed:
            report.errors.append(mixed)
            continue
        try:
            aligned = align(row, layout, where)
        except RowError as exc:
            report.errors.append(exc)
            continue
        reason = drop_reason(aligned, stage)
        if kto is not None:
            kto.add(where, reason is None, aligned.response)
        if reason and stage == "pt":  # the pre-training processor indexes the first turn of every row
            report.errors.append(RowError(f"LLaMA-Factory stops on it: {reason}", where=where, key=aligned.field))
            continue
        if reason:
            report.dropped.append(BadRow(f"LLaMA-Factory drops it: {reason}", where=where, key=aligned.field))
            continue
        problem = template_problem(aligned)
        if problem:
            report.errors.append(RowError(problem, where=where, key=layout.column("messages") or layout.column("tools")))
            continue
        problems = check_media(aligned, base, where)
        if problems:
            report.errors.append(RowError("; ".join(problems), where=where, key=next(iter(aligned.media))))
            continue
        report.usable += 1
        _placeholders(aligned, report, where)
        empty = _empty_text(aligned, stage)
        if empty and len(report.warnings) < keep:
            report.warnings.append(BadRow(empty, where=where))
        if len(report.preview) < preview:
            report.preview.append(preview_row(aligned))
    if kto is not None:
        kto.flush()
    report.rows += len(parse_errors)
    report.errors = parse_errors + report.errors
    missing = [n for n in required_columns(layout) if layout.column(n) not in seen]
    if missing and report.rows > len(parse_errors):
        from llf_recipes.data.detect import describe

        fields = ", ".join(sorted(seen)) or "none"
        names = ", ".join(f"{n} -> {layout.column(n)!r}" for n in missing)
        refit = _refit(first_rows, path, name, stage)
        raise LlfError(f"entry {name!r} maps {names}, which the file does not have (its fields: {fields}); it looks "
                       f"like {describe(first_rows)}", where=str(path), key=layout.column(missing[0]),
                       fix=fix or refit or f"llf-recipes register --file {path} --name {name} --stage {stage} --force  "
                                           "(writes the entry its layout needs), or convert it with `llf-recipes convert`")
    if report.usable == 0 and report.rows:
        from llf_recipes.data.detect import describe

        report.hint = f"the rows look like {describe(first_rows)}; " + (
            _refit(first_rows, path, name, stage) or f"`llf-recipes register --file {path} --name {name} --stage {stage} "
                                                      "--force` writes the entry that layout needs, or `llf-recipes "
                                                      "convert` converts it")
    return report


def _placeholders(aligned: Aligned, report: CheckReport, where: str) -> None:
    texts = [str(m.get("content", "")) for m in [*aligned.prompt, *aligned.response]] + [str(aligned.system or "")]
    found = {name for text in texts for name in PLACEHOLDER.findall(text)}
    for name in found:
        report.placeholders[name] = report.placeholders.get(name, 0) + 1
    if found:
        report.placeholder_rows += 1
        report.placeholder_at = report.placeholder_at or where


def _refit(rows: list[dict[str, Any]], path: Path, name: str, stage: str) -> str | None:
    """Why no entry can read these rows for `stage` and what to do instead (None when one can: re-registering the
    file writes it)."""
    from llf_recipes.data.detect import detect

    try:
        detect(rows, stage, text_file=path.suffix.lower() == ".txt", where=str(path))
        labelled = detect(rows, None, text_file=path.suffix.lower() == ".txt", where=str(path))
    except LlfError as exc:
        return f"no entry reads them for stage {stage}: {exc.message}" + (f"; {exc.fix}" if exc.fix else "")
    tag = labelled.entry.get("columns", {}).get("kto_tag")
    if tag and stage != "kto":  # an entry without the tag would train on the undesirable answers as well
        return (f"they carry a kto label ({tag!r}: true/false), and an entry for stage {stage} would train on the "
                f"undesirable answers too; train them with stage kto, or keep the rows labelled true")
    return None


class _KtoNeighbours:
    """LLaMA-Factory's KTO processor pairs each row with the answer of the row before it in its batch of 1,000 rows
    (the first with the last) and stops with an IndexError when that row has no answer: a dropped row next to a kept
    one is not dropped quietly there, it ends the run."""

    BATCH = 1000

    def __init__(self, report: CheckReport):
        self.report = report
        self.batch: list[tuple[str, bool, bool]] = []  # (where, kept, has an answer to pair with)

    def add(self, where: str, kept: bool, response: list[dict[str, Any]]) -> None:
        answer = bool(response) and (bool(response[0]["content"]) or len(response) > 1)
        self.batch.append((where, kept, answer))
        if len(self.batch) == self.BATCH:
            self.flush()

    def flush(self) -> None:
        for i, (where, kept, _) in enumerate(self.batch):
            before, _, answer = self.batch[i - 1]
            if kept and not answer:
                self.report.usable -= 1
                self.report.errors.append(RowError(
                    f"LLaMA-Factory's KTO processor stops on this row (IndexError): it pairs it with the answer of "
                    f"the row at {before}, which has none", where=where, key="kto_tag"))
        self.batch.clear()


def _mixed_kind(row: dict[str, Any], seen: dict[str, tuple[str, str]], where: str, cut: int) -> RowError | None:
    """A column whose values change kind between rows (text here, a number there) stops LLaMA-Factory's loader."""
    for key, value in row.items():
        if value is None:
            seen.setdefault(key, ("", where[cut:]))
            continue
        kind = KINDS.get(type(value), type(value).__name__)
        known = seen.get(key)
        if known is None or not known[0]:
            seen[key] = (kind, where[cut:])
        elif known[0] != kind:
            return RowError(f"field {key!r} is {kind} here but {known[0]} at line {known[1]}; LLaMA-Factory's "
                            "loader stops on a column that changes type", where=where, key=key)
    return None


def hub_cache_files(layout: Layout) -> list[Path]:
    """A hub dataset's files in the local Hugging Face cache (the newest snapshot), or [] when it is not there."""
    import os

    if layout.load_from != "hf_hub":
        return []
    home = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface", "hub")
    snapshots = Path(home) / f"datasets--{layout.source.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return []
    newest = max(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, default=None)
    if newest is None:
        return []
    root = newest / layout.folder if layout.folder else newest
    from llf_recipes.data.rows import FORMATS

    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in FORMATS and p.suffix.lower() != ".txt" and p.is_file())
    split = [p for p in files if layout.split in p.name or p.parent.name == layout.split]
    return split or (files if len({p.suffix for p in files}) == 1 else [])


def check_entry(entry: dict[str, Any], stage: str, dataset_dir: str | Path, *, name: str = "entry", preview: int = 0,
                media_dir: str | Path | None = None) -> CheckReport:
    """An entry of dataset_info.json, wherever its rows are: a local file or folder, or a hub dataset's local cache."""
    layout = Layout.from_entry(entry, name)
    if layout.load_from == "file":
        if remote_dir(dataset_dir):
            return CheckReport(note=f"not checked: with dataset_dir {dataset_dir} LLaMA-Factory reads {name!r} from the hub")
        path = resolve_source(layout, dataset_dir)
        if not path.exists():
            raise LlfError(f"entry {name!r} reads {path}, which does not exist", key=name, where=str(path),
                           fix=f"write the file there (llf-recipes convert ... -o {path}), or fix file_name")
        return check_file(path, stage, layout, preview=preview, name=name, media_base=media_dir or dataset_dir)
    files = hub_cache_files(layout)
    if not files:
        return CheckReport(note=f"not checked: {name!r} loads from {layout.load_from} ({layout.source}), which is not in "
                                "the local cache")
    total = CheckReport(path=files[0].parent, sampled=layout.num_samples)
    for one in files:
        part = check_file(one, stage, layout, preview=max(0, preview - len(total.preview)), name=name,
                          media_base=media_dir or dataset_dir)
        total.rows += part.rows
        total.usable += part.usable
        total.dropped += part.dropped
        total.errors += part.errors
        total.warnings += part.warnings
        total.preview += part.preview
    return total


def preflight(entry: Any, name: str, stage: str, dataset_dir: str | Path, *, media_dir: str | Path | None = None,
              limit: int = 2000) -> list[str]:
    """Before a launch: the entry reads as LLaMA-Factory will read it for `stage` (its first `limit` rows). Raises on what
    would stop LLaMA-Factory or leave it no row; returns notes about rows it would drop."""
    where = str(Path(dataset_dir) / "dataset_info.json")
    layout = Layout.from_entry(entry, name)
    if layout.ranking != (stage in ("rm", "dpo")):
        raise LlfError(f"dataset {name!r} has ranking: {str(layout.ranking).lower()}, which LLaMA-Factory refuses for "
                       f"stage {stage}", key=name, where=where,
                       fix="rm and dpo read ranking entries (chosen/rejected); pt, sft, kto and ppo read the others")
    if layout.load_from != "file":
        return []
    path = resolve_source(layout, dataset_dir)
    if not path.exists():
        raise LlfError(f"dataset {name!r} is registered but its file {path} is missing", key=name, where=where,
                       fix=f"llf-recipes prepare {name} --data-dir {dataset_dir} writes it again")
    report = check_file(path, stage, layout, name=name, media_base=media_dir or dataset_dir, limit=limit, keep=0)
    if report.errors:
        first = report.errors[0]
        raise LlfError(f"dataset {name!r}: LLaMA-Factory would stop on this row: {first.message}", where=first.where,
                       key=first.key, fix=f"llf-recipes check {name} --stage {stage} --data-dir {dataset_dir} lists them")
    if report.usable == 0:
        reason = report.dropped[0].message if report.dropped else "no rows"
        raise LlfError(f"dataset {name!r}: no usable row for stage {stage} in the first {report.rows} "
                       f"(LLaMA-Factory stops with \"Cannot find valid samples\"); first: {reason}", key=name, where=where,
                       fix=f"llf-recipes check {name} --stage {stage} --data-dir {dataset_dir} --show 10")
    if report.dropped:
        first = report.dropped[0]
        note = (f"dataset {name!r}: LLaMA-Factory will drop {len(report.dropped)} of the first {report.rows} row(s); "
                f"first: {first.where}: {first.message}")
        return [note]
    return []

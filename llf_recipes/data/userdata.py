"""A user's own data file: detect its layout, build the entry, and prove the whole file reads before it is registered."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

from llf_recipes.data.check import CheckReport, check_file
from llf_recipes.data.detect import Detected, apply_overrides, detect
from llf_recipes.data.rows import BadRow, folder_files, iter_rows
from llf_recipes.errors import LlfError

SNIFF_ROWS = 200


def _is_text(path: Path) -> bool:
    if path.is_dir():
        return folder_files(path)[0].suffix.lower() == ".txt"
    return path.suffix.lower() == ".txt"


def looks_like_path(name: str) -> bool:
    """A NAME|FILE argument that names a file (a data file's suffix, or a folder in it) rather than a dataset entry."""
    from llf_recipes.data.rows import FORMATS

    return "/" in name or "\\" in name or Path(name).suffix.lower() in FORMATS


def missing_file(source: str, names: str) -> LlfError:
    """The error for a NAME|FILE argument that looks like a path but names no file; `names`: where a NAME is looked up."""
    return LlfError(f"{source} does not exist", key="NAME|FILE", fix=f"check the path; a NAME is an entry of {names}")


def first_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows layout detection reads: the file's first SNIFF_ROWS."""
    path = Path(path)
    if not path.exists():
        raise LlfError(f"{path} does not exist", key="--file")
    try:
        return [row for _, row in islice(iter_rows(path, csv_empty_none=True), SNIFF_ROWS)]
    except BadRow as bad:  # the same error without the --skip-bad hint, which registering has no use for
        raise LlfError(bad.message, where=bad.where, key=bad.key, fix="fix the row; LLaMA-Factory cannot read the file "
                                                                      "as it is") from None


def detect_entry(path: str | Path, stage: str | None, file_name: str, *, formatting: str | None = None,
                 columns: dict[str, str] | None = None, tags: dict[str, str] | None = None,
                 rows: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any], Detected]:
    """The entry for `path` (written with `file_name`) from its first rows (`rows` when already read), with the
    user's overrides applied."""
    path = Path(path)
    rows = first_rows(path) if rows is None else rows
    try:
        found = detect(rows, stage, text_file=_is_text(path), where=str(path))
    except LlfError:
        if not (columns or formatting):
            raise
        found = Detected("as given", {"formatting": formatting or "alpaca", "ranking": stage in ("rm", "dpo"), "columns": {}})
    entry = apply_overrides(found.entry, formatting=formatting, columns=columns, tags=tags)
    if columns and found.layout != "as given":  # the user's mapping replaces what detection guessed for those fields
        found = Detected(found.layout + " (columns as given)", found.entry)
    return {"file_name": file_name, **entry}, found


def verified_entry(path: str | Path, stage: str, file_name: str, data_dir: str | Path, *, name: str,
                   formatting: str | None = None, columns: dict[str, str] | None = None,
                   tags: dict[str, str] | None = None, show: int = 5, rows: list[dict[str, Any]] | None = None,
                   outcome: str = "registered", media_dir: str | Path | None = None, skip_dropped: bool = False,
                   ) -> tuple[dict[str, Any], Detected, CheckReport]:
    """detect_entry, then every row of the file through that entry as LLaMA-Factory will read it from `data_dir`
    (media paths from `media_dir`, LLaMA-Factory's media_dir, which defaults to the data dir): any row it would stop
    on or drop stops what the file was for (nothing was `outcome`), with file, line and field named. With
    `skip_dropped`, rows LLaMA-Factory drops (and warns of) as it loads the file are allowed; rows it stops on never."""
    entry, found = detect_entry(path, stage, file_name, formatting=formatting, columns=columns, tags=tags, rows=rows)
    given = "name the file's fields with --columns COLUMN=FIELD" if columns else "name the fields with --columns"
    report = check_file(path, stage, entry, media_base=media_dir or data_dir, name=name, fix=given)
    problems = report.errors + ([] if skip_dropped else report.dropped)
    if problems:
        lines = "\n".join(f"  {p.where}: {p.message}" + (f" (field {p.key!r})" if p.key else "") for p in problems[:show])
        more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
        first = problems[0]
        roles = " (for other role names, pass --tags user_tag=...,assistant_tag=...)" if "role" in first.message else ""
        if " is not there (looked in " in first.message and media_dir is None:
            roles = " (media paths relative to another folder: pass --media-dir DIR, and train with media_dir: DIR)"
        raise LlfError(f"{len(problems)} of {report.rows} row(s) do not read as {found.layout} for stage {stage}; "
                       f"nothing was {outcome}\n{lines}{more}", where=first.where, key=first.key,
                       fix=f"fix those rows{roles}; `llf-recipes check {path} --stage {stage} --show N` lists them all"
                           + ("; or pass --skip-bad to register the file as it is (LLaMA-Factory skips those rows)"
                              if outcome == "registered" and not report.errors else ""))
    if report.usable == 0:
        raise LlfError(f"no row is usable for stage {stage}; nothing was {outcome}", where=str(path))
    return entry, found, report

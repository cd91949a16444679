"""`llf-recipes list`: the recipes (or hostfiles, or dataset entries) this project can see."""

from __future__ import annotations

import json
import sys

from llf_recipes.cli.common import add_catalog_args, add_verb, catalog_from
from llf_recipes.errors import LlfError


def add_parser(sub) -> None:
    p = add_verb(sub, "list", "list recipes, hostfiles or dataset entries", """
        llf-recipes list
        llf-recipes list --json | jq '.[].name'
        llf-recipes list --hostfiles
        llf-recipes list --datasets
        llf-recipes list --recipe-dir ./my-recipes
    """)
    add_catalog_args(p)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--hostfiles", action="store_true", help="list hostfiles instead of recipes")
    what.add_argument("--datasets", action="store_true", help="list dataset entries instead of recipes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=main)


def _first_sentence(text: str) -> str:
    head = text.split(". ")[0].split(": ")[0].strip()
    return head if len(head) <= 72 else head[:69] + "..."


def _cell(column: str, value) -> str:
    """A table cell: lists (JSON arrays in --json) one item to a line, stages as a chain."""
    if column == "description":
        return _first_sentence(str(value))
    if isinstance(value, list):
        return " -> ".join(value) if column == "stages" else ",\n".join(value)
    return str(value)


def rows(args, broken: list[LlfError] | None = None) -> tuple[list[str], list[dict]]:
    """The table's columns and rows; a file that cannot be read is left out and its error added to `broken`."""
    catalog = catalog_from(args)
    broken = [] if broken is None else broken
    if args.hostfiles:
        from llf_recipes.hardware import parse_hostfile

        out = []
        for name, path in catalog.hostfile_paths.items():
            try:
                layout = parse_hostfile(path)
            except LlfError as exc:
                broken.append(exc)
                continue
            out.append({"name": name, "layout": layout.describe(), "hosts": [n.host for n in layout.nodes], "path": str(path)})
        return ["name", "layout", "hosts", "path"], out
    if args.datasets:
        out = []
        for name, ds in catalog.datasets.items():
            src = ds.source.get("huggingface") or ds.source.get("modelscope") or ds.source.get("path", "")
            out.append({"name": name, "ranking": ds.ranking, "source": src, "file": ds.entry.get("file_name", "")})
        return ["name", "ranking", "source", "file"], out
    out = []
    for name in catalog.recipe_names():
        try:
            recipe = catalog.recipe(name)
        except LlfError as exc:
            broken.append(exc)
            continue
        out.append({
            "name": recipe.name,
            "stages": [s.name for s in recipe.stages],
            "datasets": list(recipe.datasets),
            "description": recipe.description,
            "origin": recipe.origin,
        })
    return ["name", "stages", "datasets", "description"], out


def main(args) -> int:
    broken: list[LlfError] = []
    columns, data = rows(args, broken)
    code = _report(broken)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return code
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if console.is_terminal and console.width < 110:  # too narrow for every column: leave out what `show` has
        columns = [c for c in columns if c not in ("datasets", "file")]
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in columns:
        # The name is never broken (it is what the user types); lists go one item to a line; prose wraps at
        # spaces; a long path or repository id folds.
        table.add_column(col.upper(), overflow="fold", no_wrap=col in ("name", "datasets", "ranking", "file"),
                         min_width=20 if col == "description" else None)
    for row in data:
        table.add_row(*[_cell(c, row[c]) for c in columns])
    Console(width=max(console.width, 160) if not console.is_terminal else None).print(table)
    if broken:
        print(f"{len(broken)} file(s) not listed: see the error(s) above", file=sys.stderr)
    return code


def _report(broken: list[LlfError]) -> int:
    """Each unreadable file, named, on stderr: the others are still listed, and the exit says something is wrong."""
    for exc in broken:
        print(f"error: {exc}", file=sys.stderr)
    return 1 if broken else 0

"""`llf-recipes list`: the recipes (or hostfiles, or dataset entries) this project can see."""

from __future__ import annotations

import json

from llf_recipes.cli.common import add_catalog_args, add_verb, catalog_from


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


def rows(args) -> tuple[list[str], list[dict]]:
    catalog = catalog_from(args)
    if args.hostfiles:
        from llf_recipes.hardware import parse_hostfile

        out = []
        for name, path in catalog.hostfile_paths.items():
            layout = parse_hostfile(path)
            out.append({"name": name, "layout": layout.describe(), "hosts": [n.host for n in layout.nodes], "path": str(path)})
        return ["name", "layout", "hosts", "path"], out
    if args.datasets:
        out = []
        for name, ds in catalog.datasets.items():
            src = ds.source.get("huggingface") or ds.source.get("modelscope") or ds.source.get("path", "")
            out.append({"name": name, "ranking": ds.ranking, "source": src, "file": ds.entry.get("file_name", "")})
        return ["name", "ranking", "source", "file"], out
    out = []
    for recipe in catalog.recipes():
        out.append({
            "name": recipe.name,
            "stages": [s.name for s in recipe.stages],
            "datasets": list(recipe.datasets),
            "description": recipe.description,
            "origin": recipe.origin,
        })
    return ["name", "stages", "datasets", "description"], out


def main(args) -> int:
    columns, data = rows(args)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
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
    return 0

"""`llf-recipes cp NAME DEST`: copy a recipe to edit it."""

from __future__ import annotations

import shutil
from pathlib import Path

from llf_recipes.cli.common import add_catalog_args, add_verb, catalog_from
from llf_recipes.errors import LlfError


def add_parser(sub) -> None:
    p = add_verb(sub, "cp", "copy a recipe to edit it (a project's recipes/ shadows the bundled one)", """
        llf-recipes cp sft-huanhuan recipes/            # same name: shadows the bundled recipe here
        llf-recipes cp sft-huanhuan recipes/my-sft.yaml # a new recipe called my-sft
        llf-recipes cp zhihu recipes/ --force           # overwrite an earlier copy
    """)
    p.add_argument("name", help="recipe to copy")
    p.add_argument("dest", help="a directory, or a file path ending in .yaml")
    p.add_argument("--force", action="store_true", help="overwrite DEST if it exists")
    add_catalog_args(p)
    p.set_defaults(func=main)


def main(args) -> int:
    recipe = catalog_from(args).recipe(args.name)
    dest = Path(args.dest)
    if dest.is_dir() or args.dest.endswith(("/", "\\")):
        dest = dest / recipe.path.name
    elif dest.suffix not in (".yaml", ".yml"):
        raise LlfError(f"{dest} is neither a directory nor a .yaml file", fix="give a directory or a path ending in .yaml")
    if dest.exists() and not args.force:
        raise LlfError(f"{dest} already exists", fix="pass --force to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipe.path, dest)
    found = catalog_from(args).recipe_paths.get(dest.stem)
    if found is not None and found[1].resolve() == dest.resolve():
        print(f"copied {recipe.name} -> {dest}; it is recipe {dest.stem} here (llf-recipes show {dest.stem})")
    else:
        print(f"copied {recipe.name} -> {dest}; outside recipes/ it is found by path (llf-recipes show {dest}), or "
              f"by name once moved into recipes/ or given with --recipe-dir {dest.parent}")
    return 0

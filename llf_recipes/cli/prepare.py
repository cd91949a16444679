"""`llf-recipes prepare`: download, convert, check and register datasets (or every dataset a recipe names)."""

from __future__ import annotations

from llf_recipes.cli.common import add_catalog_args, add_verb, catalog_from
from llf_recipes.cli.verb import add_alias
from llf_recipes.data.layouts import local_dir
from llf_recipes.data.prepare import prepare
from llf_recipes.errors import LlfError


def add_parser(sub) -> None:
    p = add_verb(sub, "prepare", "download, convert, check and register datasets in one step", """
        llf-recipes prepare --recipe zhihu --data-dir data          # every dataset the recipe names
        llf-recipes prepare huanhuan belle_0.5m --hub modelscope
        llf-recipes prepare --recipe rlhf-ultrafeedback --sample-data   # offline: the bundled sample rows
        llf-recipes prepare belle_2m --limit 100000 --skip-bad
    """)
    p.add_argument("names", nargs="*", metavar="NAME", help="dataset entries from dataset_info.d/")
    p.add_argument("--recipe", metavar="NAME", help="prepare every dataset this recipe names")
    p.add_argument("--data-dir", default="data", metavar="DIR", help="LLaMA-Factory's dataset_dir (default: data)")
    p.add_argument("--sample-data", dest="sample", action="store_true",
                   help="use the bundled sample rows instead of downloading")
    add_alias(p, "--sample", dest="sample", action="store_true")
    p.add_argument("--hub", choices=("hf", "modelscope"), help="which hub when a source lists both")
    p.add_argument("--limit", type=int, metavar="N", help="convert at most N source rows per dataset")
    p.add_argument("--skip-bad", action="store_true", help="set bad source rows aside instead of stopping")
    p.add_argument("--force", action="store_true", help="replace entries registered with a different definition")
    add_catalog_args(p)
    p.set_defaults(func=main)


def main(args) -> int:
    from llf_recipes import paths

    paths.directory(args.data_dir)
    local_dir(args.data_dir, "prepare")
    catalog = catalog_from(args)
    names = list(args.names)
    if args.recipe:
        names += [n for n in catalog.recipe(args.recipe).datasets if n not in names]
    if not names:
        raise LlfError("nothing to prepare", fix="name datasets, or pass --recipe NAME")
    for name in args.names:
        if name not in catalog.datasets and name in catalog.recipe_paths:
            sample = " --sample-data" if args.sample else ""
            raise LlfError(f"{name!r} is a recipe, not a dataset",
                           fix=f"llf-recipes prepare --recipe {name}{sample} prepares every dataset it names")
    done = prepare(names, args.data_dir, catalog=catalog, sample=args.sample, hub=args.hub, skip_bad=args.skip_bad,
                   limit=args.limit, force=args.force)
    if args.recipe and len(names) > 1:
        print_mixes(catalog, args.recipe, args.data_dir, {p.name: p.rows for p in done})
    return 0


def print_mixes(catalog, name: str, data_dir: str, counts: dict[str, int]) -> None:
    """Per training stage that mixes datasets: the rows each one is expected to give, as the recipe renders."""
    from llf_recipes.data.mixing import describe, expected_mix
    from llf_recipes.hardware import cpu_layout
    from llf_recipes.render import Overrides, Renderer

    recipe = catalog.recipe(name)
    overrides = Overrides.parse([f"dataset_dir={data_dir}"], recipe)
    for rendered in Renderer(recipe, cpu_layout(), overrides, catalog).render_all():
        mix = expected_mix(rendered.config, counts) if rendered.verb == "train" else None
        if mix is not None:
            print(f"{name} stage {rendered.stage.name}: {describe(mix)}")

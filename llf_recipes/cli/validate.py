"""`llf-recipes validate`: every stage of every named recipe on every layout, before a GPU is touched."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import replace
from pathlib import Path

from llf_recipes.cli.common import (
    add_catalog_args,
    add_layout_args,
    add_override_args,
    add_verb,
    catalog_from,
    layout_from,
    print_findings,
)
from llf_recipes.engines import stages
from llf_recipes.errors import LlfError
from llf_recipes.hardware import parse_hostfile
from llf_recipes.plain_config import is_plain, plain_recipe
from llf_recipes.render import Overrides, Renderer
from llf_recipes.validation import errors


def add_parser(sub) -> None:
    p = add_verb(sub, "validate", "validate recipes (or a plain LLaMA-Factory YAML) against LLaMA-Factory 0.9.5", """
        llf-recipes validate sft-huanhuan
        llf-recipes validate --all --all-hostfiles          # what CI runs: every recipe on every layout
        llf-recipes validate zhihu --hostfile my-cluster.txt
        llf-recipes validate my_config.yaml                 # a hand-written llamafactory-cli YAML
        llf-recipes validate dpo-ultrafeedback --set pref_loss=hinge --allow pref-loss-fallback
    """)
    p.add_argument("names", nargs="*", metavar="NAME", help="recipe names, recipe files, or LLaMA-Factory YAML files")
    p.add_argument("--all", action="store_true", help="every recipe in the catalog")
    p.add_argument("--all-hostfiles", action="store_true", help="every bundled and project hostfile")
    p.add_argument("--verb", choices=("train", "export", "chat", "api"),
                   help="for a plain YAML: the llamafactory-cli verb (default: export with export_dir, train with stage, "
                        "do_train, do_eval, do_predict or output_dir, chat otherwise)")
    add_layout_args(p)
    add_override_args(p)
    add_catalog_args(p)
    p.set_defaults(func=main)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LlfError(f"cannot read it as UTF-8 text: {exc}", where=str(path)) from None


def _plain_file(name: str) -> Path | None:
    """A plain LLaMA-Factory config named on the command line (what `render FILE` and `run FILE` take as one)."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
        return None
    return path if is_plain(_read(path), where=str(path)) else None


def validate_plain(path: Path, args, catalog) -> int:
    """The file as `llamafactory-cli` takes it, rendered and checked as `render FILE` and `run FILE` see it."""
    recipe = plain_recipe(path, _read(path), args.verb)
    layout = layout_from(args, catalog)
    (rendered,) = Renderer(recipe, layout, Overrides.parse(args.overrides, recipe), catalog).render_all()
    rendered.as_written = True
    findings = stages.check(rendered, catalog, set(args.allow))
    hint = _rendered_for(path, catalog) if layout.world_size == 1 else None
    if hint:  # a file `render` wrote for a multi-device layout, validated here as one process
        findings = [replace(f, fix=f"it was rendered for {hint[0]}: validate it there with {hint[1]} "
                                   f"(by hand: {f.fix})") if f.rule == "deepspeed-needs-torchrun" else f
                    for f in findings]
    print_findings(findings)
    if errors(findings):
        return 1
    print(f"ok: {path} ({rendered.verb}, {len(rendered.config)} keys)")
    return 0


_RENDERED = re.compile(r"^# .+ / .+ for (.+?) \(rendered by llf-recipes\)$")


def _rendered_for(path: Path, catalog) -> tuple[str, str] | None:
    """(the layout a rendered YAML's first line names, the option that selects it), when it has more than one device."""
    match = _RENDERED.match(_read(path).split("\n", 1)[0])
    if not match or match.group(1).startswith("1 node x 1 "):
        return None
    described = match.group(1)
    for name, hostfile in catalog.hostfile_paths.items():
        try:
            if parse_hostfile(hostfile).describe() == described:
                return described, f"--hostfile {name}"
        except LlfError:
            continue
    single = re.match(r"1 node x (\d+) ", described)
    option = f"--gpus {','.join(map(str, range(int(single.group(1)))))}" if single else "--hostfile FILE"
    return described, option


def main(args) -> int:
    catalog = catalog_from(args)
    started = time.perf_counter()
    plain = [p for p in map(_plain_file, args.names) if p is not None]
    names = [n for n in args.names if Path(n) not in plain]
    status = 0
    for path in plain:
        status |= validate_plain(path, args, catalog)
    if args.all:
        names = catalog.recipe_names()
    if not names:
        if not plain:
            raise LlfError("nothing to validate", fix="name recipes, or pass --all")
        return status
    checked = failed = 0
    if args.all_hostfiles:
        layouts = []
        for path in catalog.hostfile_paths.values():
            try:
                layouts.append(parse_hostfile(path, device=args.device))
            except LlfError as exc:  # the other layouts are still checked
                print(f"FAIL hostfile {path}\nerror: {exc}", file=sys.stderr)
                failed += 1
    else:
        layouts = [layout_from(args, catalog)]
    for name in names:
        try:
            recipe = catalog.recipe(name)
        except LlfError as exc:
            if not args.all:  # a name typed on the command line: the usual one-line error
                raise
            print(f"FAIL {name}\nerror: {exc}", file=sys.stderr)  # the other recipes are still checked
            failed += 1
            continue
        found: dict[str, list[str]] = {}  # a finding's text -> the layouts it comes up on, to print it once
        for layout in layouts:
            label = f"{recipe.name} @ {layout.source} ({layout.describe()})"
            try:
                rendered = Renderer(recipe, layout, Overrides.parse(args.overrides, recipe), catalog).render_all()
            except LlfError as exc:
                print(f"FAIL {label}\nerror: {exc}", file=sys.stderr)
                failed += 1
                continue
            for r in rendered:
                checked += 1
                findings = stages.check(r, catalog, set(args.allow))
                for f in findings:
                    found.setdefault(f.format(), []).append(Path(layout.source).stem)
                if errors(findings):
                    failed += 1
                    print(f"FAIL {label} stage {r.stage.name}", file=sys.stderr)
        for text, where in found.items():
            head, _, rest = text.partition("\n")
            on = f" (on {', '.join(dict.fromkeys(where))})" if len(layouts) > 1 else ""
            print(head + on + ("\n" + rest if rest else ""), file=sys.stderr)
    elapsed = time.perf_counter() - started
    verdict = "all valid" if not failed else f"{failed} failed"
    print(f"validated {checked} stage(s) of {len(names)} recipe(s) on {len(layouts)} layout(s) in {elapsed:.2f} s: {verdict}")
    return 1 if failed or status else 0

"""`llf-recipes render NAME`: plain LLaMA-Factory YAML (and DeepSpeed JSON) for a stage and a layout."""

from __future__ import annotations

import sys
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
from llf_recipes.cli.verb import add_alias
from llf_recipes.engines import stages
from llf_recipes.render import Overrides, Renderer, write_stage
from llf_recipes.validation import errors


def add_parser(sub) -> None:
    p = add_verb(sub, "render", "render a recipe into plain LLaMA-Factory YAML for your hardware", """
        llf-recipes render sft-huanhuan                         # one GPU, YAML on stdout
        llf-recipes render sft-huanhuan --gpus 0,1,2,3          # per-device batch and accumulation for 4 GPUs
        llf-recipes render zhihu --stage dpo --hostfile 2node-8gpu --output-dir out/
        llf-recipes render sft-huanhuan --set lora_rank=16 --set ~quantization_bit
        llf-recipes render zhihu --set dpo.learning_rate=5e-6   # one stage only
    """)
    p.add_argument("name", help="recipe name or path to a recipe file")
    p.add_argument("--stage", help="render only this stage (default: every stage)")
    p.add_argument("--output-dir", dest="output", metavar="DIR",
                   help="write STAGE.yaml (and the DeepSpeed JSON) into DIR instead of printing the YAML")
    add_alias(p, "-o", "--output", dest="output")  # -o names one file or model elsewhere; render writes several
    p.add_argument("--no-validate", action="store_true", help="skip validation")
    add_layout_args(p)
    add_override_args(p)
    add_catalog_args(p)
    p.set_defaults(func=main)


def main(args) -> int:
    catalog = catalog_from(args)
    recipe = catalog.recipe(args.name)
    layout = layout_from(args, catalog)
    renderer = Renderer(recipe, layout, Overrides.parse(args.overrides, recipe), catalog)
    rendered = renderer.render_all([args.stage] if args.stage else None)
    if not args.no_validate:
        findings = [f for r in rendered for f in stages.check(r, catalog, set(args.allow))]
        print_findings(findings)
        if errors(findings):
            print(f"not rendered: {len(errors(findings))} error(s)", file=sys.stderr)
            return 1
    if args.output:
        written: dict[Path, None] = {}  # stages that share a DeepSpeed profile write it once each; name it once
        for r in rendered:
            written.update(dict.fromkeys(write_stage(r, Path(args.output) / f"{r.stage.name}.yaml")))
        for path in written:
            print(f"wrote {path}")
        return 0
    print("\n---\n".join(r.to_yaml() for r in rendered), end="")
    return 0

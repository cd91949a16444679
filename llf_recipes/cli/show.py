"""`llf-recipes show NAME`: what a recipe does, its stages, variables, datasets and what it needs."""

from __future__ import annotations

import json
import textwrap

from llf_recipes.cli.common import add_catalog_args, add_verb, catalog_from
from llf_recipes.hardware import default_layout
from llf_recipes.render import Renderer


def add_parser(sub) -> None:
    p = add_verb(sub, "show", "describe a recipe: stages, variables and defaults, datasets, requirements", """
        llf-recipes show sft-huanhuan
        llf-recipes show zhihu --json
    """)
    p.add_argument("name", help="recipe name (see `llf-recipes list`) or path to a recipe file")
    add_catalog_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=main)


def requirements(configs: list[dict], precision_var: bool = True) -> list[str]:
    """What the rendered stages need beyond llamafactory itself (`precision_var`: the recipe has the `precision`
    variable; a plain LLaMA-Factory YAML sets bf16/fp16 itself)."""
    needs: list[str] = []
    for cfg in configs:
        if cfg.get("quantization_bit") and cfg.get("quantization_method", "bnb") == "bnb":
            needs.append("bitsandbytes (4-bit QLoRA: a CUDA GPU for real runs; --smoke keeps it on CPU)")
        if cfg.get("flash_attn") in ("fa2", "fa3"):
            needs.append("flash-attn")
        if cfg.get("use_unsloth"):
            needs.append("unsloth")
        if cfg.get("plot_loss"):
            needs.append("matplotlib (plot_loss)")
        if cfg.get("bf16"):
            needs.append("bf16-capable devices (Ampere or newer; on V100/T4 "
                         + ("--set precision=fp16)" if precision_var else "--set bf16=false --set fp16=true)"))
    needs.append("deepspeed, when rendered for more than one device or with offload")
    return list(dict.fromkeys(needs))


def main(args) -> int:
    catalog = catalog_from(args)
    recipe = catalog.recipe(args.name)
    rendered = Renderer(recipe, default_layout(), catalog=catalog).render_all()
    info = {
        "name": recipe.name,
        "path": str(recipe.path),
        "origin": recipe.origin,
        "description": recipe.description,
        "stages": [
            {"name": r.stage.name, "verb": r.verb, "lf_stage": r.config.get("stage"), "needs": r.needs,
             "description": r.stage.description,
             "global_batch_size": r.batch.global_batch_size if r.batch else None,
             "engine": r.engine, "translations": r.translations}
            for r in rendered
        ],
        "vars": recipe.vars,
        "datasets": {
            name: (catalog.datasets[name].source if name in catalog.datasets else None) for name in recipe.datasets
        },
        "requires": requirements([r.config for r in rendered], "precision" in recipe.vars),
    }
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    print(f"{recipe.name}  ({recipe.origin}: {recipe.path})\n")
    print(textwrap.fill(recipe.description, 100) + "\n")
    print("stages:")
    for s in info["stages"]:
        after = f"  (reads {', '.join(s['needs'])})" if s["needs"] else ""
        if s["verb"] == "grpo":
            runs = "GRPO through EasyR1 or TRL (--backend)"
        elif s["engine"] == "llf":
            runs = f"llf-recipes {s['verb']}, engine llf"
        else:
            runs = f"llamafactory-cli {s['verb']}, stage {s['lf_stage']}, engine {s['engine']}"
        batch = f", global batch {s['global_batch_size']}" if s["global_batch_size"] else ""
        print(f"  {s['name']:<8} {runs}{batch}{after}")
        if s["description"]:
            print(f"           {s['description']}")
        for note in s["translations"]:
            print(f"           translated for {s['engine']}: {note}")
    print("\nvariables (change with --set NAME=VALUE):")
    for key, value in recipe.vars.items():
        print(f"  {key:<20} {json.dumps(value, ensure_ascii=False)}")
    print("\ndatasets:")
    for name, source in info["datasets"].items():
        where = ", ".join(f"{k}: {v}" for k, v in (source or {}).items()) or "not defined in dataset_info.d/"
        print(f"  {name:<20} {where}")
    print("\nneeds:")
    for item in info["requires"]:
        print(f"  - {item}")
    return 0

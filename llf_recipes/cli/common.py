"""Options and printing shared by several verbs."""

from __future__ import annotations

import argparse

from llf_recipes.catalog import Catalog
from llf_recipes.cli.verb import add_verb, device_type, formatter  # noqa: F401 - re-exported for the verbs
from llf_recipes.hardware import HostLayout, default_layout, parse_gpus, parse_hostfile
from llf_recipes.schema.rules import RULES, Finding


def add_catalog_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe-dir", action="append", default=[], metavar="DIR",
                   help="also look for recipes in DIR (shadows bundled and project recipes of the same name)")


def catalog_from(args: argparse.Namespace) -> Catalog:
    return Catalog.discover(recipe_dirs=args.recipe_dir)


def add_layout_args(p: argparse.ArgumentParser, hostfile_help: str = "DeepSpeed-style hostfile (`host slots=N`) or a bundled name") -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gpus", metavar="LIST", help="devices on this machine, e.g. 0,1 (default: one device)")
    g.add_argument("--hostfile", metavar="FILE", help=hostfile_help)
    p.add_argument("--device", type=device_type(with_index=False), default="cuda", metavar="{auto,cuda,npu,cpu}",
                   help="accelerator kind: npu uses ASCEND_RT_VISIBLE_DEVICES; auto: what this machine has "
                        "(default: cuda)")
    p.add_argument("--master-port", type=int, default=None, metavar="PORT", help="rendezvous port (default: 29500)")


def layout_from(args: argparse.Namespace, catalog: Catalog) -> HostLayout:
    if getattr(args, "device", None) == "auto":
        from llf_recipes.preflight import local_device

        args.device = local_device()
    if getattr(args, "hostfile", None):
        layout = parse_hostfile(catalog.hostfile(args.hostfile), device=args.device)
    elif getattr(args, "gpus", None):
        layout = parse_gpus(args.gpus, device=args.device)
    else:
        layout = default_layout(args.device)
    if getattr(args, "master_port", None):
        from dataclasses import replace

        layout = replace(layout, master_port=args.master_port)
    return layout


def add_override_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe variable or a config key (STAGE.key for one stage; ~key removes a key); "
                        "values are typed as YAML scalars")
    p.add_argument("--allow", action="append", default=[], choices=RULES, metavar="RULE",
                   help="turn a validation rule's error into a warning (e.g. pref-loss-fallback)")


def print_findings(findings: list[Finding], stream=None) -> None:
    import sys

    for f in findings:
        print(f.format(), file=stream or sys.stderr)


def add_run_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR|NAME",
                   help="a stage's output directory (it holds llf-run.json), or a recipe name: its last completed stage")
    p.add_argument("--output-root", default="saves", metavar="DIR",
                   help="where NAME's runs are looked up (default: saves; smoke runs are under saves/smoke)")


def run_from(args: argparse.Namespace):
    """(run directory, manifest) for the verbs that use a finished run."""
    from llf_recipes import manifest

    return manifest.resolve(args.run, args.output_root)


def add_sampling_args(p: argparse.ArgumentParser, max_new_tokens: int, greedy: bool) -> None:
    """How a model generates, the same for ask, chat and serve (LLaMA-Factory's generating arguments)."""
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, metavar="N",
                   help=f"longest answer, in tokens (default: {max_new_tokens})")
    p.add_argument("--temperature", type=float, default=0.0 if greedy else None, metavar="T",
                   help="sampling temperature; 0 decodes greedily, the same answer every time (default: "
                        + ("0)" if greedy else "LLaMA-Factory's, 0.95 with top-p 0.7)"))
    p.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling: keep the smallest set of tokens whose "
                                                            "probability adds up to P (with --temperature above 0)")
    p.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely tokens (with --temperature)")
    p.add_argument("--repetition-penalty", type=float, metavar="R",
                   help="above 1.0 discourages repeating tokens (default: the model's generation config)")


def sampling_from(args: argparse.Namespace) -> dict:
    """The generating arguments LLaMA-Factory reads, from add_sampling_args' options (unset ones left out)."""
    from llf_recipes.errors import LlfError

    if args.max_new_tokens < 1:
        raise LlfError(f"--max-new-tokens {args.max_new_tokens} must be at least 1", key="--max-new-tokens")
    if args.temperature is not None and args.temperature < 0:
        raise LlfError(f"--temperature {args.temperature} is negative", key="--temperature",
                       fix="0 decodes greedily; 0.7 to 1.0 samples")
    config: dict = {"max_new_tokens": args.max_new_tokens}
    if args.temperature == 0:
        config["do_sample"] = False
    else:
        if args.temperature is not None:
            config.update(do_sample=True, temperature=args.temperature)
        if args.top_p is not None:
            config["top_p"] = args.top_p
        if args.top_k is not None:
            config["top_k"] = args.top_k
    if args.repetition_penalty is not None:
        config["repetition_penalty"] = args.repetition_penalty
    return config

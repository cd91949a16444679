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
    g.add_argument("--gpus", metavar="LIST", help="devices on this machine, e.g. 0,1 or a range 0-3 (default: one device)")
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
    elif getattr(args, "gpus", None) is not None:  # --gpus '' is a mistake, not the default layout
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


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """How a model generates, the same options and defaults for ask, chat, serve and generate (LLaMA-Factory's
    generating arguments; checked in llf_recipes.sampling)."""
    from llf_recipes.sampling import BACKENDS, DEFAULTS

    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=DEFAULTS["temperature"], metavar="T",
                   help=f"sampling temperature; 0 decodes greedily, the same answer every time (default: "
                        f"{DEFAULTS['temperature']})")
    g.add_argument("--top-p", type=float, default=DEFAULTS["top_p"], metavar="P",
                   help=f"nucleus sampling: keep the smallest set of tokens whose probability adds up to P, in (0, 1] "
                        f"(default: {DEFAULTS['top_p']})")
    g.add_argument("--top-k", type=int, default=DEFAULTS["top_k"], metavar="K",
                   help=f"sample among the K most likely tokens; 0: among all (default: {DEFAULTS['top_k']})")
    g.add_argument("--repetition-penalty", type=float, default=DEFAULTS["repetition_penalty"], metavar="R",
                   help=f"above 1.0 discourages repeating tokens (default: {DEFAULTS['repetition_penalty']})")
    g.add_argument("--max-new-tokens", type=int, default=DEFAULTS["max_new_tokens"], metavar="N",
                   help=f"longest answer, in tokens (default: {DEFAULTS['max_new_tokens']})")
    g.add_argument("--backend", choices=list(BACKENDS), default="hf",
                   help="inference engine: LLaMA-Factory's Hugging Face one, or vLLM (an NVIDIA GPU and the vllm "
                        "extra; default: hf)")


def sampling_from(args: argparse.Namespace) -> dict:
    """add_sampling_args' options as LLaMA-Factory's generating arguments; a bad value stops here, naming its option."""
    from llf_recipes.sampling import generating_args

    return generating_args(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                           repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens)


def backend_from(args: argparse.Namespace) -> str:
    """LLaMA-Factory's infer_backend for --backend; vLLM without its package or a CUDA device stops here (the devices
    counted without torch: chat and serve load the model in a child process)."""
    from llf_recipes.preflight import visible_cuda_devices
    from llf_recipes.sampling import infer_backend

    return infer_backend(args.backend, visible_cuda_devices)

"""`llf-recipes merge`: combine models of one base with mergekit (soup, SLERP, TIES, DARE)."""

from __future__ import annotations

import time
from importlib.util import find_spec
from pathlib import Path

from llf_recipes.cli.common import add_verb, device_type
from llf_recipes.errors import LlfError


def add_parser(sub) -> None:
    from llf_recipes.merge import METHODS

    p = add_verb(sub, "merge", "merge two or more models of one base: soup, SLERP, TIES or DARE (through mergekit)", """
        llf-recipes merge saves/a/sft saves/b/sft -o saves/soup --method soup              # equal-weight average
        llf-recipes merge saves/a/sft saves/b/sft -o saves/soup --method soup --weights 0.7,0.3
        llf-recipes merge saves/zhihu/sft saves/zhihu/dpo -o saves/slerp --method slerp --t 0.3
        llf-recipes merge saves/math/sft saves/code/sft -o saves/ties --method ties --density 0.5
        llf-recipes merge saves/math/sft saves/code/sft -o saves/dare --method dare --density 0.3 --seed 1
        llf-recipes merge saves/a/sft saves/b/sft -o saves/soup --method soup --print-config   # mergekit YAML only
    """)
    p.add_argument("sources", nargs="+", metavar="RUN_DIR|NAME|MODEL_DIR",
                   help="runs (LoRA adapters are exported into their base first), recipe names or model directories")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="where the merged model goes")
    p.add_argument("--method", required=True, choices=list(METHODS),
                   help="soup: weighted average; slerp: spherical interpolation of two models; ties: trimmed, "
                        "sign-elected task vectors; dare: random drop and rescale of task vectors, then TIES "
                        "(dare_linear: without TIES)")
    p.add_argument("--weights", metavar="W,W,...", help="one weight per model (soup: normalized; default: equal)")
    p.add_argument("--t", type=float, default=0.5, help="slerp: 0 keeps the first model, 1 the second (default: 0.5)")
    p.add_argument("--density", type=float, default=0.5,
                   help="ties/dare: share of each task vector kept (default: 0.5)")
    p.add_argument("--base", metavar="MODEL", help="ties/dare: the common base (default: the runs' base model)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="dtype of the merged weights (default: the first model's)")
    p.add_argument("--seed", type=int, help="dare: random seed, for a reproducible drop")
    p.add_argument("--device", type=device_type(with_index=True), default="cpu", metavar="{auto,cuda,npu,cpu}[:N]",
                   help="where mergekit computes: cpu, cuda or cuda:N; auto: a GPU when there is one (default: cpu)")
    p.add_argument("--output-root", default="saves", metavar="DIR", help="where recipe NAMEs are looked up (default: saves)")
    p.add_argument("--print-config", action="store_true",
                   help="print the mergekit YAML and stop (LoRA runs are named by the export directory they will get)")
    p.add_argument("--force", action="store_true", help="replace an output directory written by merge")
    p.set_defaults(func=main)


def main(args) -> int:
    from llf_recipes import merge, yamlio

    started = time.time()
    if not args.print_config and find_spec("mergekit") is None:  # before any export of a source run
        raise LlfError("merging needs mergekit", fix='pip install "llf-recipes[merge]"')
    weights = _weights(args.weights)
    sources = [merge.resolve(s, args.output_root, export=not args.print_config) for s in args.sources]
    base = args.base or next((s.base for s in sources if s.base), None) if args.method in merge.NEEDS_BASE else None
    merge.check_compatible(sources, base)
    dtype = args.dtype or merge.default_dtype(sources[0].path) or merge.default_dtype(sources[0].base or "")
    config = merge.build_config(args.method, [s.path for s in sources], weights=weights, t=args.t,
                                density=args.density, base=base, dtype=dtype)
    if args.print_config:
        print(yamlio.dump(config), end="")
        return 0
    if not args.force and merge.up_to_date(Path(args.output), config, sources):
        print(f"merged model: {Path(args.output)} (up to date with its sources; --force merges again)")
        return 0
    if args.device == "auto":
        from llf_recipes.preflight import cuda_inventory

        args.device = "cuda" if cuda_inventory().gpus else "cpu"
    out = merge.run_mergekit(config, Path(args.output), seed=args.seed, device=args.device,
                             force=args.force or merge.written_by_merge(Path(args.output)))
    merge.write_manifest(out, args.method, config, sources, started)
    print(f"merged model: {out}")
    return 0


def _weights(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise LlfError(f"--weights {text!r} is not a comma-separated list of numbers", key="--weights",
                       fix="e.g. --weights 0.7,0.3") from None

"""`llf-recipes export`: merge a run's LoRA adapters into a standalone model."""

from __future__ import annotations

from pathlib import Path

from llf_recipes.cli.common import add_run_target, add_verb, run_from
from llf_recipes.cli.verb import add_alias
from llf_recipes.use import export, exported_from


def add_parser(sub) -> None:
    p = add_verb(sub, "export", "merge a run's LoRA adapter(s) into its base: a standalone Hugging Face model", """
        llf-recipes export saves/zhihu/dpo                 # -> saves/zhihu/dpo-merged
        llf-recipes export zhihu -o models/zhihu-dpo       # the recipe's last completed stage
        llf-recipes export sft-huanhuan --output-root saves/smoke
        llf-recipes export saves/grpo-gsm8k/grpo --checkpoint best   # an EasyR1 run's best checkpoint
    """)
    add_run_target(p)
    p.add_argument("-o", "--output", dest="export_dir", type=Path, metavar="DIR",
                   help="where the merged model goes (default: RUN_DIR-merged)")
    add_alias(p, "--export-dir", dest="export_dir", type=Path)
    p.add_argument("--export-size", type=int, default=5, metavar="GB", help="shard size in GB (default: 5)")
    p.add_argument("--export-device", choices=("cpu", "auto"), default="cpu", help="where the merge runs (default: cpu)")
    p.add_argument("--force", action="store_true", help="export again, or into a directory not written by export")
    p.add_argument("--checkpoint", choices=("latest", "best"),
                   help="EasyR1 GRPO runs: merge this checkpoint (best: the highest validation reward) instead of the one "
                        "the run recorded")
    p.set_defaults(func=main)


def main(args) -> int:
    if args.export_dir is not None:
        from llf_recipes.paths import writable_dir

        writable_dir(args.export_dir, "-o")
    run_dir, data = run_from(args)
    source = exported_from(run_dir, data)
    if source is not None:  # the run root's latest result is already an export: export its source run (a no-op when
        run_dir, data = source  # the export is up to date, so the README's first command runs twice)
    if args.checkpoint:
        from llf_recipes.engines.easyr1.checkpoints import select_checkpoint

        data = select_checkpoint(run_dir, data, args.checkpoint)
        args.force = True  # a different checkpoint is a different model
    out = export(run_dir, data, args.export_dir, export_size=args.export_size, export_device=args.export_device,
                 force=args.force)
    from llf_recipes.console import shown_path

    print(f"merged model: {shown_path(out)}")
    return 0

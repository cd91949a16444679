"""`llf-recipes pairs`: best-vs-worst preference pairs from scored answers, registered for DPO."""

from __future__ import annotations

from pathlib import Path

from llf_recipes.cli.verb import add_verb


def add_parser(sub) -> None:
    p = add_verb(sub, "pairs", "turn scored answers into a preference dataset (best vs worst per prompt), registered "
                               "with ranking: true", """
        llf-recipes pairs answers.scored.jsonl --name selfplay_pairs --data-dir data
        llf-recipes pairs answers.judged.jsonl --name selfplay_pairs --data-dir data --min-margin 2 --force
        llf-recipes run dpo-ultrafeedback --set dataset=selfplay_pairs --set dataset_dir=data
    """)
    p.add_argument("scored", type=Path, metavar="SCORED.jsonl", help="what `score` or `judge` wrote (scores per answer)")
    p.add_argument("--name", required=True, help="the dataset name to register")
    p.add_argument("--data-dir", type=Path, default=Path("data"), metavar="DIR",
                   help="where to write NAME.json and register it (default: data)")
    p.add_argument("--min-margin", type=float, default=0.0, metavar="M",
                   help="keep a pair only when best - worst is at least M (default: 0, ties always dropped)")
    p.add_argument("--force", action="store_true", help="replace an entry of the same name")
    p.set_defaults(func=main)


def main(args) -> int:
    from llf_recipes.errors import LlfError
    from llf_recipes.generate.pairs import build, write_and_register
    from llf_recipes.judge.run import read_generated

    if args.min_margin < 0:
        raise LlfError(f"--min-margin {args.min_margin} is negative", key="--min-margin")
    rows = read_generated(args.scored)
    outcome = build(rows, args.min_margin)
    path = write_and_register(outcome, args.name, args.data_dir, force=args.force)
    print(f"{len(outcome.pairs)} pairs from {len(rows)} prompts -> {path} (registered as {args.name!r}, ranking: true); "
          f"dropped: {outcome.ties} ties, {outcome.below_margin} within the margin, "
          f"{outcome.unscored} with fewer than two scored answers")
    return 0

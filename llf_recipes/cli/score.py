"""`llf-recipes score`: reward-model scores for generated answers, without a judge endpoint."""

from __future__ import annotations

from pathlib import Path

from llf_recipes.cli.verb import add_verb, device_type


def add_parser(sub) -> None:
    p = add_verb(sub, "score", "score generated answers with a reward model an rm stage trained (adapter + value head)",
                 """
        llf-recipes score answers.jsonl --reward-model saves/rlhf-ultrafeedback/rm
        llf-recipes score answers.jsonl --reward-model rlhf-ultrafeedback/rm --output-root saves/smoke -o scored.jsonl
    """)
    p.add_argument("answers", type=Path, metavar="ANSWERS.jsonl", help="what `generate` wrote")
    p.add_argument("--reward-model", required=True, metavar="RUN_DIR|NAME", help="the rm stage's output directory")
    p.add_argument("--output-root", default="saves", metavar="DIR", help="where NAME is looked up (default: saves)")
    p.add_argument("-o", "--output", type=Path, metavar="OUT.jsonl",
                   help="the rows with a `scores` list, one per answer (default: ANSWERS.scored.jsonl)")
    p.add_argument("--device", type=device_type(with_index=True), default="auto", metavar="{auto,cuda,npu,cpu}",
                   help="where the reward model runs (default: auto)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    p.set_defaults(func=main)


def main(args) -> int:
    import json

    from llf_recipes import manifest
    from llf_recipes.atomic import write_text
    from llf_recipes.generate.reward import check_reward_run, score_rows
    from llf_recipes.judge.run import progress_bar, read_generated

    rows = read_generated(args.answers)
    run_dir, data = manifest.resolve(args.reward_model, args.output_root)
    check_reward_run(run_dir, data)
    output = args.output or args.answers.with_suffix("").with_suffix(".scored.jsonl")
    from llf_recipes.eval.scoring import pick_device

    device = pick_device(args.device)
    bar = progress_bar(sum(len(r["answers"]) for r in rows), f"score {args.answers.name}", args.progress)
    scored = score_rows(run_dir, data, rows, device=device, log=output.with_name(output.name + ".log"),
                        progress=bar.update)
    bar.close()
    write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in scored))
    values = [s for r in scored for s in r["scores"]]
    mean = round(sum(values) / len(values), 4) if values else None
    print(f"scored {len(values)} answers to {len(rows)} prompts with {run_dir}: mean reward {mean} -> {output}")
    return 0

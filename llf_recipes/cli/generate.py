"""`llf-recipes generate`: a run's answers to every prompt of a dataset, streamed to a JSON-lines file."""

from __future__ import annotations

from pathlib import Path

from llf_recipes.cli.common import add_run_target, add_sampling_args, add_verb, backend_from, sampling_from


def add_parser(sub) -> None:
    p = add_verb(sub, "generate", "answer every prompt of a dataset with a run's model (N answers each), resumable", """
        llf-recipes generate saves/zhihu/sft --dataset zhihu_rlhf -o answers.jsonl --num-return 4 --temperature 0.8
        llf-recipes generate zhihu --dataset huanhuan --data-dir data -o greedy.jsonl --temperature 0 --limit 50
        llf-recipes generate ~/models/Qwen2.5-0.5B-Instruct --template qwen --dataset gsm8k -o gsm8k.jsonl
        llf-recipes generate saves/zhihu/sft --dataset my_prompts.jsonl -o answers.jsonl --num-return 2 --temperature 0.8
    """)
    add_run_target(p)
    p.add_argument("--dataset", required=True, metavar="NAME[,NAME]|FILE",
                   help="registered dataset(s) whose prompts are answered (in --data-dir, else the run's dataset_dir), "
                        "or a JSON/JSON-lines file of prompts in any layout LLaMA-Factory reads (detected)")
    p.add_argument("--data-dir", metavar="DIR", help="where the datasets are registered (its dataset_info.json)")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.jsonl",
                   help="one JSON line per prompt: index, prompt, system, reference, answers, settings; "
                        "an existing file written with the same settings is resumed")
    p.add_argument("--num-return", type=int, default=1, metavar="N", help="answers per prompt (default: 1; above 1 "
                                                                            "needs sampling)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N prompts")
    p.add_argument("--seed", type=int, default=42, help="sampling seed; prompt i uses seed + i (default: 42)")
    p.add_argument("--template", metavar="NAME", help="chat template for a plain model directory (a run records its own)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    add_sampling_args(p)
    p.set_defaults(func=main)


def main(args) -> int:
    from llf_recipes import manifest
    from llf_recipes.errors import LlfError
    from llf_recipes.generate.batch import Request, generate, plain_model

    sampling, backend = sampling_from(args), backend_from(args)
    target = Path(args.run)
    if (target / "config.json").is_file() and not (target / manifest.MANIFEST).is_file():
        run_dir, data = target, plain_model(target, args.template)
    else:
        run_dir, data = manifest.resolve(args.run, args.output_root)
    if args.limit is not None and args.limit < 1:
        raise LlfError(f"--limit {args.limit} must be at least 1", key="--limit")
    request = Request(run_dir=run_dir, data=data, datasets=[d.strip() for d in args.dataset.split(",") if d.strip()],
                      output=args.output, data_dir=args.data_dir, num_return=args.num_return,
                      sampling=sampling, limit=args.limit, seed=args.seed, progress=args.progress,
                      backend=backend)
    counts = generate(request)
    skipped = f", {counts['skipped']} already there" if counts["skipped"] else ""
    print(f"generated answers to {counts['generated']} of {counts['prompts']} prompts{skipped} -> {args.output}")
    return 0

"""`llf-recipes ask`: one answer from a run's model, printed; no interactive loop."""

from __future__ import annotations

import sys

from llf_recipes.cli.common import add_run_target, add_sampling_args, add_verb, backend_from, run_from, sampling_from
from llf_recipes.use import ask


def add_parser(sub) -> None:
    p = add_verb(sub, "ask", "print one answer from a run's model (adapter or merged) to a prompt", """
        llf-recipes ask saves/sft-huanhuan/sft "你是谁？"
        llf-recipes ask zhihu "如何评价这部电影？" --max-new-tokens 128 --temperature 0     # greedy: the same every time
        llf-recipes ask zhihu "如何评价这部电影？" --top-p 0.9 --repetition-penalty 1.1 --backend vllm
        echo "Give me a haiku." | llf-recipes ask saves/zhihu/dpo-merged -
    """)
    add_run_target(p)
    p.add_argument("prompt", help="the user message; - reads it from stdin")
    p.add_argument("--system", help="system message (default: the template's)")
    add_sampling_args(p)
    p.set_defaults(func=main)


def main(args) -> int:
    sampling, backend = sampling_from(args), backend_from(args)
    run_dir, data = run_from(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    answer = ask(run_dir, data, prompt, system=args.system, sampling=sampling, backend=backend)
    print(answer)
    return 0

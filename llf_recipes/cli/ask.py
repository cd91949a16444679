"""`llf-recipes ask`: one answer from a run's model, printed; no interactive loop."""

from __future__ import annotations

import sys

from llf_recipes.cli.common import add_run_target, add_verb, run_from
from llf_recipes.use import ask


def add_parser(sub) -> None:
    p = add_verb(sub, "ask", "print one answer from a run's model (adapter or merged) to a prompt", """
        llf-recipes ask saves/sft-huanhuan/sft "你是谁？"
        llf-recipes ask zhihu "如何评价这部电影？" --max-new-tokens 128
        echo "Give me a haiku." | llf-recipes ask saves/zhihu/dpo-merged -
    """)
    add_run_target(p)
    p.add_argument("prompt", help="the user message; - reads it from stdin")
    p.add_argument("--system", help="system message (default: the template's)")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) decodes greedily: the same answer every time")
    p.set_defaults(func=main)


def main(args) -> int:
    run_dir, data = run_from(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    answer = ask(run_dir, data, prompt, system=args.system, max_new_tokens=args.max_new_tokens,
                 temperature=args.temperature)
    print(answer)
    return 0

"""`llf-recipes judge`: grade generated answers, or compare two sets of them, with a judge model over HTTP."""

from __future__ import annotations

import os
from pathlib import Path

from llf_recipes.cli.verb import add_verb


def add_parser(sub) -> None:
    p = add_verb(sub, "judge", "grade generated answers (1-10) or compare two generations (A/B, both orders) with a "
                               "judge model behind an OpenAI-compatible API", """
        llf-recipes judge answers.jsonl --judge-url http://127.0.0.1:8000/v1 --judge-model judge
        OPENAI_API_KEY=... llf-recipes judge dpo.jsonl --against sft.jsonl --judge-url https://api.openai.com/v1 \\
          --judge-model gpt-4o-mini --concurrency 8
        llf-recipes judge answers.jsonl --judge-url http://127.0.0.1:8000/v1 --judge-model m --rubric my_rubric.j2
    """)
    p.add_argument("answers", type=Path, metavar="ANSWERS.jsonl", help="what `generate` wrote")
    p.add_argument("--against", type=Path, metavar="OTHER.jsonl",
                   help="compare with another generation over the same prompts: the win rate of ANSWERS over OTHER")
    p.add_argument("--judge-url", required=True, metavar="URL", help="the API's base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--judge-model", required=True, metavar="NAME", help="the model id the API serves")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the API key (default: OPENAI_API_KEY; unset: no key sent)")
    p.add_argument("--rubric", type=Path, metavar="FILE", help="Jinja template replacing the built-in prompt (single: "
                                                                 "question, reference, answer; pairwise: question, "
                                                                 "answer_a, answer_b)")
    p.add_argument("-o", "--output", type=Path, metavar="OUT.jsonl",
                   help="judged rows (default: ANSWERS.judged.jsonl, or ANSWERS.vs-OTHER.jsonl)")
    p.add_argument("--cache", type=Path, metavar="FILE",
                   help="judge replies kept across runs (default: ANSWERS.judge-cache.jsonl)")
    p.add_argument("--results", type=Path, metavar="FILE",
                   help="evaluation results to add the summary to (default: the one `eval` and `report` use for "
                        "the runs directory of the run that generated ANSWERS, e.g. saves/zhihu/evaluation_results.json; "
                        "beside ANSWERS when no run is known)")
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="requests in flight at once (default: 4)")
    p.add_argument("--retries", type=int, default=3, metavar="N",
                   help="tries again after HTTP 429/5xx, a timeout or a dropped connection (default: 3)")
    p.add_argument("--backoff", type=float, default=1.0, metavar="S",
                   help="first wait before a retry, doubled each time (default: 1.0 s)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per request (default: 60 s)")
    p.add_argument("--max-tokens", type=int, default=512, metavar="N", help="longest judge reply (default: 512)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    p.set_defaults(func=main)


def main(args) -> int:
    from llf_recipes.errors import LlfError
    from llf_recipes.judge import run
    from llf_recipes.judge.client import Endpoint, Judge

    for flag in ("concurrency", "max_tokens"):
        if getattr(args, flag) < 1:
            raise LlfError(f"--{flag.replace('_', '-')} must be at least 1", key=f"--{flag.replace('_', '-')}")
    if args.retries < 0 or args.backoff < 0 or args.timeout <= 0:
        raise LlfError("--retries and --backoff must not be negative, --timeout must be positive", key="--retries")
    rows = run.read_generated(args.answers)
    stem = args.answers.with_suffix("")
    endpoint = Endpoint(args.judge_url, args.judge_model, api_key=os.environ.get(args.judge_key_env) or None,
                        timeout_s=args.timeout, retries=args.retries, backoff_s=args.backoff,
                        concurrency=args.concurrency, max_tokens=args.max_tokens)
    judge = Judge(endpoint, args.cache or Path(f"{stem}.judge-cache.jsonl"))
    if args.against:
        other = run.read_generated(args.against)
        bar = run.progress_bar(2 * len(rows), f"judge {args.answers.name} vs {args.against.name}", args.progress)
        judged, malformed, summary = run.compare(judge, rows, other, args.rubric, bar.update)
        output = args.output or Path(f"{stem}.vs-{args.against.with_suffix('').name}.jsonl")
        label = f"vs {args.against.name}"
    else:
        bar = run.progress_bar(sum(len(r["answers"]) for r in rows), f"judge {args.answers.name}", args.progress)
        judged, malformed, summary = run.grade(judge, rows, args.rubric, bar.update)
        output = args.output or Path(f"{stem}.judged.jsonl")
        label = "single"
    bar.close()
    stats = judge.stats
    summary.update(judge_model=args.judge_model, judge_calls=stats.calls, cache_hits=stats.cached, retries=stats.retried)
    aside = run.write_outputs(output, judged, malformed)
    found = run.generated_by(rows)  # the generating run: where the summary goes, and under which name
    results = args.results or run.default_results(found, args.answers)
    name = run.record_results(results, rows, found, label, summary, args.answers.name)
    if summary["mode"] == "single":
        head = f"mean score {summary['mean_score']} over {summary['graded']} of {summary['answers']} answers"
    else:
        ci = summary["win_rate_ci95"]
        head = (f"win rate {summary['win_rate']} (95% CI {ci[0]}-{ci[1]}) over {summary['judged']} prompts: "
                f"{summary['wins']} wins, {summary['losses']} losses, {summary['ties']} ties "
                f"({summary['position_inconsistent']} flipped with the order)" if ci else "no prompt judged")
    print(head)
    print(f"judge calls: {stats.calls} sent, {stats.cached} from the cache, {stats.retried} retried, "
          f"{stats.failed} failed; malformed replies: {summary['malformed']}"
          + (f" (set aside in {aside})" if aside else ""))
    print(f"-> {output}; summary in {results} under {name!r}")
    return 0

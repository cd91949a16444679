"""`llf-recipes eval`: training metrics, held-out loss, perplexity, preference accuracy, GRPO accuracy and samples of
every run (or bare model), each against its base model with --baseline, and the forgetting check with --general."""

from __future__ import annotations

import json
import sys

from llf_recipes.cli.common import add_verb
from llf_recipes.cli.verb import add_alias, device_type
from llf_recipes.errors import LlfError


def add_parser(sub) -> None:
    p = add_verb(sub, "eval", "evaluate runs: training metrics, held-out loss/perplexity, preference accuracy, samples", """
        llf-recipes eval saves/                          # every completed run under saves/ -> saves/evaluation_results.json
        llf-recipes eval saves/zhihu --methods sft,dpo   # only these methods (or stage names)
        llf-recipes eval saves/zhihu --skip-perplexity --limit 50
        llf-recipes eval saves/ --dataset ultrafeedback_prefs_test --data-dir data   # one test set for every run
        llf-recipes eval saves/zhihu/sft --pref-dataset zhihu_rlhf --max-generation-samples 5
        llf-recipes eval saves/zhihu --baseline          # the base model on the same rows: base -> run, and the delta
        llf-recipes eval saves/zhihu --general general_mc.jsonl --max-drop 0.05   # the forgetting check
        llf-recipes eval saves/grpo-gsm8k/grpo           # GRPO: accuracy and rewards on the held-out split
        llf-recipes eval models/Qwen2.5-0.5B --dataset alpaca_zh_demo --data-dir data   # a bare model
    """)
    p.add_argument("paths", nargs="+", metavar="RUNS_DIR|RUN_DIR|MODEL",
                   help="run directories (they hold llf-run.json), directories holding runs at any depth, or a bare "
                        "model (a directory with config.json, or a hub id in the local cache)")
    p.add_argument("--methods", nargs="+", default=[], metavar="METHOD[,METHOD]",
                   help="only runs of these methods (sft,dpo,orpo,simpo,kto,rm,pt,grpo) or recipe stage names")
    p.add_argument("--limit", dest="max_samples", type=int, default=100, metavar="N",
                   help="at most N held-out rows per metric (default: 100; 0 skips test metrics)")
    add_alias(p, "--max-samples", dest="max_samples", type=int)
    p.add_argument("--max-generation-samples", type=int, default=3, metavar="N",
                   help="prompts answered for the samples (default: 3; 0 skips generation)")
    p.add_argument("--max-new-tokens", type=int, metavar="N",
                   help="length of a sample answer (default: 64; GRPO: the run's max_completion_length)")
    p.add_argument("--skip-perplexity", action="store_true", help="skip test loss and perplexity (faster)")
    p.add_argument("--dataset", default="", metavar="NAME[,NAME]",
                   help="test every run on these registered datasets (all rows) instead of each run's held-out split; "
                        "for GRPO, .jsonl files with prompt and answer")
    p.add_argument("--baseline", action="store_true",
                   help="also score each run's base model on the same rows and settings (entries base:RUN, deltas)")
    p.add_argument("--general", metavar="FILE|NAME",
                   help="forgetting check: a multiple-choice set (question, choices, answer) scored on base and run; "
                        "implies --baseline")
    p.add_argument("--max-drop", type=float, default=0.05, metavar="X",
                   help="the forgetting check flags a run whose general accuracy is more than X below its base's "
                        "(default: 0.05)")
    p.add_argument("--template", help="chat template for bare models (default: the tokenizer's own chat template)")
    p.add_argument("--pref-dataset", default="", metavar="NAME[,NAME]",
                   help="preference pairs for preference accuracy (default: the test rows when they are pairs)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where --dataset/--pref-dataset are registered, and a run's own datasets when its dataset_dir "
                        "is gone (default: each run's dataset_dir)")
    p.add_argument("--device", type=device_type(with_index=True), default="auto", metavar="{auto,cuda,npu,cpu}[:N]",
                   help="where the models run: auto (a GPU when torch sees one), cuda, cuda:N, npu or cpu "
                        "(default: auto)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="weights dtype (default: bfloat16 on a GPU that has it, else float32)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="sequences per forward pass (default: 8)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="results file (default: RUNS_DIR/evaluation_results.json, or ./ with several paths); "
                        "entries of runs not evaluated now are kept")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (drawn only on a terminal; elsewhere one line per run scored)")
    p.set_defaults(func=main)


def main(args) -> int:
    from pathlib import Path

    from llf_recipes.eval import runner
    from llf_recipes.eval.runs import Options, default_output, discover, log, read_results, write_results

    args.methods = [m.strip() for item in args.methods for m in item.split(",") if m.strip()]  # A,B or A B
    for flag in ("max_samples", "max_generation_samples", "max_new_tokens", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < (1 if flag in ("max_new_tokens", "batch_size") else 0):
            name = "--limit" if flag == "max_samples" else f"--{flag.replace('_', '-')}"
            raise LlfError(f"{name} must be a positive number", key=name)
    runs, skipped = discover(args.paths, args.methods, template=args.template)
    for line in skipped:
        log(line)
    if not runs:
        wanted = f" of method {', '.join(args.methods)}" if args.methods else ""
        raise LlfError(f"no completed run{wanted} under {', '.join(args.paths)}",
                       fix="pass a stage's output directory (it holds llf-run.json) or a directory of runs")
    options = Options(
        methods=args.methods, max_samples=args.max_samples, generation_samples=args.max_generation_samples,
        max_new_tokens=args.max_new_tokens, skip_perplexity=args.skip_perplexity,
        datasets=_names(args.dataset), pref_datasets=_names(args.pref_dataset), data_dir=args.data_dir,
        device=args.device, dtype=args.dtype, batch_size=args.batch_size,
        progress=not args.no_progress and sys.stderr.isatty(), summary_line=not args.no_progress,
        baseline=args.baseline, general=args.general, max_drop=args.max_drop, template=args.template,
    )
    output = Path(args.output) if args.output else default_output(args.paths)
    options.log = str(output.parent / "llf-eval.log")
    read_results(output)  # a broken results file fails now, not after the scoring
    results = runner.evaluate(runs, options)
    write_results(output, results)
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        print_table(results)
    log(f"wrote {output} ({len(results)} run(s)); the engine's output is in {options.log}")
    flagged = [n for n, r in results.items() if (r.get("forgetting") or {}).get("flagged")]
    if flagged:
        log(f"forgetting check failed: {', '.join(flagged)} lost more than {args.max_drop:g} general accuracy")
        return 1
    return 0


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ("run", "method", "steps", "train loss", "best eval", "test loss", "ppl", "pref acc", "margin", "accuracy",
               "general", "time")
    for name in columns:
        table.add_column(name, justify="left" if name in ("run", "method") else "right")
    for name, r in results.items():
        train = f"{fmt(r.get('initial_train_loss'))} -> {fmt(r.get('final_train_loss'))}"
        acc = (f"{r['preference_accuracy']:.3f} ({r['preference_correct']}/{r['preference_total']})"
               if r.get("preference_accuracy") is not None else "-")
        grpo, gen = r.get("grpo") or {}, r.get("general") or {}
        seconds = r.get("training_time_seconds")
        table.add_row(name, r.get("method") or "-", fmt(r.get("total_steps")), train, fmt(r.get("best_eval_loss")),
                      fmt(r.get("test_loss")), fmt(r.get("perplexity")), acc, fmt(r.get("loss_margin")),
                      _ratio(grpo, "accuracy"), _ratio(gen, "accuracy"),
                      f"{seconds:.0f}s" if seconds is not None else "-")
    console = Console()
    Console(width=max(console.width, 140) if not console.is_terminal else None).print(table)
    for name, r in results.items():
        for note in r.get("notes") or []:
            print(f"{name}: {note}")
        for line in comparison_lines(name, r, results):
            print(line)


def _ratio(part: dict, key: str) -> str:
    if part.get(key) is None:
        return "-"
    total = part.get("rows", part.get("items"))
    return f"{part[key]:.3f} ({part.get('correct')}/{total})"


def comparison_lines(name: str, record: dict, results: dict) -> list[str]:
    """base -> run per metric with the delta and whether it improved, and the forgetting verdict."""
    from llf_recipes.eval.compare import rows

    mine = [r for r in rows({**results, name: record}) if r.run == name]
    if not mine and not record.get("baseline"):
        return []
    parts = [f"{r.label} {fmt(r.base_value)} -> {fmt(r.value)} ({r.delta:+.4g}, {r.verdict})" for r in mine]
    lines = [f"{name} vs its base: " + ("; ".join(parts) or "no metric in common")]
    check = record.get("forgetting") or {}
    if check.get("checked"):
        verdict = "FORGETTING" if check["flagged"] else "ok"
        lines.append(f"{name} forgetting check: general accuracy {check['base_accuracy']:.3f} -> {check['accuracy']:.3f} "
                     f"(drop {check['drop']:+.3f}, allowed {check['max_drop']:.3f}): {verdict}")
    return lines

"""`llf-recipes bench`: standard benchmarks (lm-evaluation-harness) on runs, bare models and their base models."""

from __future__ import annotations

from llf_recipes.cli.verb import add_verb, device_type
from llf_recipes.errors import LlfError


def add_parser(sub) -> None:
    p = add_verb(sub, "bench", "score runs on standard benchmarks with lm-evaluation-harness (base vs runs)", """
        llf-recipes bench saves/zhihu --tasks ceval-valid,cmmlu --baseline          # base -> every run of zhihu
        llf-recipes bench saves/sft-belle/sft --tasks mmlu,gsm8k,hellaswag --limit 200
        llf-recipes bench models/Qwen2.5-0.5B --tasks my_quiz --include-path tasks/   # your own task YAMLs
        HF_DATASETS_CACHE=/data/hf-datasets llf-recipes bench saves/ --tasks mmlu     # offline: a copied cache
    """)
    p.add_argument("paths", nargs="+", metavar="RUNS_DIR|RUN_DIR|MODEL",
                   help="run directories, directories of runs, or a bare model (directory or cached hub id)")
    p.add_argument("--tasks", required=True, action="append", metavar="TASK[,TASK]",
                   help="lm-eval task, group or tag names (comma list or repeated)")
    p.add_argument("--include-path", metavar="DIR", help="a directory of your own lm-eval task YAML files")
    p.add_argument("--limit", type=int, metavar="N", help="at most N rows per task (a quick check, not a score)")
    p.add_argument("--num-fewshot", type=int, metavar="N", help="few-shot examples (default: each task's own)")
    p.add_argument("--baseline", action="store_true", help="also score each run's base model (entries base:RUN)")
    p.add_argument("--methods", nargs="+", default=[], metavar="METHOD[,METHOD]",
                   help="only runs of these methods (sft,dpo,orpo,simpo,kto,rm,pt,grpo) or recipe stage names")
    p.add_argument("--backend", default="auto", choices=("auto", "hf", "vllm"),
                   help="lm-eval model: vllm on a GPU when installed, else hf (default: auto)")
    p.add_argument("--device", type=device_type(with_index=True), default="auto", metavar="{auto,cuda,npu,cpu}[:N]",
                   help="where lm-eval runs the models: auto (a GPU when torch sees one), cuda, cuda:N, npu or cpu "
                        "(default: auto)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="lm-eval batch size (default: 8)")
    p.add_argument("--apply-chat-template", action="store_true", help="wrap prompts in the model's chat template")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="results file (default: RUNS_DIR/evaluation_results.json); other entries are kept")
    p.set_defaults(func=main)


def main(args) -> int:
    from pathlib import Path

    from llf_recipes.eval import benchmarks
    from llf_recipes.eval.runs import base_run, default_output, discover, log, read_results, write_results

    tasks = _names(args.tasks)
    if args.limit is not None and args.limit < 1:
        raise LlfError("--limit must be a positive number", key="--limit")
    runs, skipped = discover(args.paths, _names(args.methods))
    for line in skipped:
        log(line)
    if not runs:
        raise LlfError(f"no completed run or model under {', '.join(args.paths)}",
                       fix="pass a stage's output directory (it holds llf-run.json), a directory of runs or a model")
    output = Path(args.output) if args.output else default_output(args.paths)
    read_results(output)  # a broken results file fails now, not after the scoring
    if benchmarks.go_offline_if_unreachable():
        log("the hub is not reachable: datasets are read from the local cache only (HF_DATASETS_CACHE)")
    version = benchmarks.require_lm_eval()
    manager = benchmarks.task_manager(args.include_path)
    benchmarks.check_tasks(manager, tasks)
    options = benchmarks.BenchOptions(tasks, args.include_path, args.limit, args.num_fewshot, args.batch_size,
                                      args.device, args.backend, args.apply_chat_template)
    models, baseline_of = [], {}
    for run in runs:
        if args.baseline and not run.bare:
            base = base_run(run)
            known = {m.data["model"]["base"]: m.name for m in models if m.bare}
            if base.data["model"]["base"] not in known:
                models.append(base)
            baseline_of[run.name] = known.get(base.data["model"]["base"], base.name)
        models.append(run)
    results = {}
    for i, model in enumerate(models, 1):
        log(f"[{i}/{len(models)}] bench {model.name}: {', '.join(tasks)}")
        output_data = benchmarks.run_tasks(model, options, manager)
        results[model.name] = {"model_name": model.name, "model_path": str(model.run_dir), "method": model.method,
                               "base_model": (model.data.get("model") or {}).get("base"),
                               "benchmarks": benchmarks.record(output_data, options, version)}
        if model.name in baseline_of:
            results[model.name]["baseline"] = baseline_of[model.name]
        write_results(output, {model.name: results[model.name]}, merge_keys=("benchmarks",))  # kept as it goes
    print_table(results)
    log(f"wrote {output} ({len(results)} model(s))")
    return 0


def _names(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from llf_recipes.eval.benchmarks import headline

    tasks = list(dict.fromkeys(t for r in results.values() for t in r["benchmarks"]))
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("model")
    for task in tasks:
        table.add_column(task, justify="right")
    for name, r in results.items():
        cells = []
        for task in tasks:
            metric, value, err = headline((r["benchmarks"].get(task) or {}).get("metrics") or {})
            cells.append("-" if value is None else f"{metric.split(',')[0]} {value:.4f}" +
                         (f" ± {err:.4f}" if err is not None else ""))
        table.add_row(name, *cells)
    console = Console()
    Console(width=max(console.width, 120) if not console.is_terminal else None).print(table)

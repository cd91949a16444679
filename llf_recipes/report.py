"""`report`: one self-contained HTML page comparing runs: curves, a reading of them, metrics, samples side by side.

Charts are drawn by matplotlib on the server side as inline SVG (text as paths), so the page needs no script, font or
network at all, and the same figures export to PNG. No torch: it reads trainer_state.json, manifests and, when
present, the evaluation_results.json written by `eval`, `bench` and `judge`.
"""

from __future__ import annotations

import html
import io
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llf_recipes import manifest
from llf_recipes.atomic import open_atomic, write_text
from llf_recipes.errors import LlfError
from llf_recipes.eval import compare
from llf_recipes.eval.runs import RESULTS, Run, discover, read_results
from llf_recipes.eval.training import Finding, curves, diagnose, diagnose_grpo, easyr1_curves, training_metrics

TEMPLATE = Path(__file__).with_name("report.html.j2")
# matplotlib's tab10, so a run has one colour in every chart.
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


@dataclass
class RunView:
    run: Run
    color: str
    series: dict[str, list[tuple[int, float]]]
    metrics: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.run.name


@dataclass
class Chart:
    slug: str
    title: str
    caption: str
    figure: Any  # matplotlib Figure

    def svg(self) -> str:
        import matplotlib

        buf = io.StringIO()
        # A salt per chart keeps the ids of several inline SVGs apart (clip paths are referenced by id).
        with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": self.slug}):
            self.figure.savefig(buf, format="svg", metadata={"Date": None})
        text = buf.getvalue()
        text = re.sub(r"<\?xml[^>]*\?>\s*", "", text)
        text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)  # not allowed inside HTML, and it names a remote DTD
        return text

    def png(self, path: Path, dpi: int = 120) -> Path:
        with open_atomic(path) as fh:
            self.figure.savefig(fh, format="png", dpi=dpi, metadata={"Software": None})
        return path


def collect(paths: list[str | Path], results_path: str | Path | None = None) -> tuple[list[RunView], dict[str, Any]]:
    """Every run with a model under `paths` (any status: a failed run's curves are the interesting ones)."""
    found: list[tuple[Path, dict[str, Any]]] = []  # every manifest read on the way, for the stage table
    runs, _ = discover(paths, completed=False, manifests=found)
    if not runs:
        raise LlfError(f"no run found under {', '.join(map(str, paths))}",
                       fix="pass a directory holding stage outputs with llf-run.json (e.g. saves/)")
    if results_path is None:
        first = Path(paths[0])
        results_path = first / RESULTS if first.is_dir() else None
    results = read_results(results_path) if results_path else {}
    by_path = {str(Path(r.get("model_path", "")).resolve()): r for r in results.values() if isinstance(r, dict)}
    stale = stale_results(runs, by_path, results_path)
    for name in stale:
        results.pop(name, None)
    by_path = {path: r for path, r in by_path.items() if r.get("model_name") not in stale}
    views = []
    for i, run in enumerate(runs):
        state = manifest.trainer_state(run.run_dir)
        series = curves(state) or easyr1_curves(run.run_dir)
        metrics = {**training_metrics(run.run_dir, run.data), **(by_path.get(str(run.run_dir)) or {})}
        smoke = (run.data.get("layout") or {}).get("source") == "smoke"
        findings = diagnose_grpo(series) if run.method == "grpo" else diagnose(series, smoke=smoke)
        views.append(RunView(run, COLORS[i % len(COLORS)], series, metrics, findings))
    names = {v.name for v in views}
    shown = {name: r for name, r in results.items() if isinstance(r, dict)
             and (name in names or r.get("baseline_for") in names or r.get("method") == "base")}
    compared = compare.rows(shown)
    tasks, bench_rows = compare.benchmark_table(shown)
    return views, {"stages": stage_table(found), "results_file": str(results_path) if results else None,
                   "compared": compared,
                   "reading": compare.reading(shown, compared), "bench_tasks": tasks, "bench_rows": bench_rows,
                   "judge_rows": judge_rows(results), "stale": sorted(stale)}


def stale_results(runs: list[Run], by_path: dict[str, dict[str, Any]], results_path: str | Path | None) -> set[str]:
    """Names of the results that score an earlier run of a directory than the one there now: the entry records the
    run's finished_at and it differs, or (entries written before that was recorded) the run finished after the
    results file was last written."""
    import datetime

    if not results_path or not Path(results_path).is_file():
        return set()
    written = Path(results_path).stat().st_mtime
    stale = set()
    for run in runs:
        entry = by_path.get(str(run.run_dir))
        finished = run.data.get("finished_at")
        if not entry or not finished:
            continue
        if entry.get("run_finished_at"):
            if entry["run_finished_at"] != finished:
                stale.add(entry.get("model_name") or run.name)
            continue
        try:
            finished_s = datetime.datetime.strptime(finished, "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            continue
        if finished_s > written + 1:  # the timestamp has whole seconds
            stale.add(entry.get("model_name") or run.name)
    return stale


def judge_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """What `judge` filed under each run in evaluation_results.json: a mean grade, or a win rate with its 95%
    interval, one row per judging (single, or vs another generation)."""
    rows = []
    for name, entry in results.items():
        judged = entry.get("judge") if isinstance(entry, dict) else None
        for label, summary in (judged or {}).items() if isinstance(judged, dict) else ():
            if not isinstance(summary, dict):
                continue
            pairwise = summary.get("mode") == "pairwise"
            ci = summary.get("win_rate_ci95") if pairwise else None
            rows.append({"run": name, "label": "single answers" if label == "single" else label,
                         "judge_model": summary.get("judge_model"), "pairwise": pairwise,
                         "value": summary.get("win_rate" if pairwise else "mean_score"),
                         "ci": ci if isinstance(ci, list | tuple) and len(ci) == 2 else None,
                         "counted": summary.get("judged" if pairwise else "graded"),
                         "total": summary.get("prompts" if pairwise else "answers"),
                         "wins": summary.get("wins"), "losses": summary.get("losses"), "ties": summary.get("ties"),
                         "malformed": summary.get("malformed")})
    return rows


STAGE_FIGURES = ("train_loss", "prompts", "answers", "scored", "mean_score", "pairs")
# The mean over every logged step of the run (manifest.final_metrics), not the last step's loss the curves end on.
FIGURE_LABELS = {"train_loss": "mean train loss (all steps)"}


def stage_table(manifests: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every stage of `manifests` (run directory, manifest), in pipeline order: the training stages and those that
    train nothing (generate, score, judge, pairs), with how each ended and what it produced."""
    rows, seen = [], set()
    for run_dir, data in manifests:
        if run_dir.resolve() in seen:  # under two of the paths given
            continue
        seen.add(run_dir.resolve())
        figures = ", ".join(f"{FIGURE_LABELS.get(k, k.replace('_', ' '))} {_num(v)}"
                            for k, v in manifest.figures(data, STAGE_FIGURES))
        recipe = data.get("recipe") if isinstance(data.get("recipe"), dict) else {}
        rows.append({"stage": f"{recipe.get('name') or run_dir.parent.name}/{data.get('stage')}",
                     "verb": data.get("verb"), "status": data.get("status"), "duration_s": data.get("duration_s"),
                     "figures": figures, "directory": str(run_dir), "index": data.get("stage_index", 0)})
    return sorted(rows, key=lambda r: (r["stage"].split("/")[0], r["index"] if isinstance(r["index"], int) else 0))


def charts(views: list[RunView]) -> list[Chart]:
    return [c for c in (_loss_chart(views), _preference_chart(views), _grpo_chart(views), _optimizer_chart(views))
            if c is not None]


def _new_figure(rows: int, cols: int, height: float = 2.8):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    return fig, axes


def _plot(ax, view: RunView, key: str, label: str | None = None, dashed: bool = False) -> bool:
    points = view.series.get(key) or []
    if not points:
        return False
    steps, values = zip(*points)
    ax.plot(steps, values, color=view.color, linestyle="--" if dashed else "-", marker="o" if len(points) < 30 else None,
            markersize=3, linewidth=1.6, label=label or view.name)
    bad = [s for s, v in points if math.isnan(v)]
    for s in bad:  # a NaN leaves a gap; mark where
        ax.axvline(s, color=view.color, linestyle=":", linewidth=1)
    return True


def _style(ax, title: str, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)


def _loss_chart(views: list[RunView]) -> Chart | None:
    """One row per method (their losses measure different things), train and eval side by side on one y axis.
    GRPO's loss is near zero by construction: its rewards are drawn instead."""
    methods = list(dict.fromkeys(v.run.method for v in views if v.run.method != "grpo"
                                 and (v.series.get("loss") or v.series.get("eval_loss"))))
    if not methods:
        return None
    fig, axes = _new_figure(len(methods), 2)
    for row, method in enumerate(methods):
        train_ax, eval_ax = axes[row]
        eval_ax.sharey(train_ax)
        drawn_eval = False
        for view in (v for v in views if v.run.method == method):
            _plot(train_ax, view, "loss")
            drawn_eval |= _plot(eval_ax, view, "eval_loss")
        _style(train_ax, f"{method}: train loss", "loss")
        _style(eval_ax, f"{method}: eval loss", "loss")
        if not drawn_eval:
            eval_ax.text(0.5, 0.5, "no evaluation logged\n(set val_size or eval_dataset)", ha="center", va="center",
                         transform=eval_ax.transAxes, fontsize=9, color="#666")
        train_ax.legend(fontsize=8, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=9)
    return Chart("loss", "Loss", "Train and eval loss per step; runs of one method share the axes.", fig)


def _preference_chart(views: list[RunView]) -> Chart | None:
    pref = [v for v in views if any(k in v.series for k in ("rewards/margins", "eval_rewards/margins"))]
    if not pref:
        return None
    fig, axes = _new_figure(1, 2)
    margin_ax, acc_ax = axes[0]
    for view in pref:
        _plot(margin_ax, view, "rewards/margins", f"{view.name} train")
        _plot(margin_ax, view, "eval_rewards/margins", f"{view.name} eval", dashed=True)
        _plot(acc_ax, view, "rewards/accuracies", f"{view.name} train")
        _plot(acc_ax, view, "eval_rewards/accuracies", f"{view.name} eval", dashed=True)
    _style(margin_ax, "reward margin (chosen - rejected)", "margin")
    _style(acc_ax, "reward accuracy (chosen ranked first)", "accuracy")
    acc_ax.set_ylim(-0.05, 1.05)
    margin_ax.legend(fontsize=8, loc="best")
    for ax in axes[0]:
        ax.set_xlabel("step", fontsize=9)
    return Chart("preference", "Preference training",
                 "Implicit reward margins and accuracies logged by the DPO-family trainers; dashed: eval.", fig)


LINE_STYLES = ("-", "--", ":", "-.")


def _grpo_chart(views: list[RunView]) -> Chart | None:
    """Per reward function, the group reward with its spread, KL, completion length and clipping, per step."""
    grpo = [v for v in views if "reward" in v.series or any(k.startswith("rewards/") and k.endswith("/mean")
                                                               for k in v.series)]
    if not grpo:
        return None
    fig, axes = _new_figure(2, 3, height=2.6)
    panels = [("reward per function", "mean reward"), ("group reward (mean ± std)", "reward"), ("KL to reference", "kl"),
              ("completion length", "tokens"), ("clip ratio", "ratio")]
    for view in grpo:
        functions = sorted(k for k in view.series if k.startswith("rewards/") and k.endswith("/mean"))
        for j, key in enumerate(functions):
            _plot(axes[0][0], view, key, f"{view.name}: {key.split('/')[1]}", dashed=False)
            axes[0][0].lines[-1].set_linestyle(LINE_STYLES[j % len(LINE_STYLES)])
        if _plot(axes[0][1], view, "reward") and view.series.get("reward_std"):
            std = dict(view.series["reward_std"])
            steps = [s for s, _ in view.series["reward"]]
            mean = [v for _, v in view.series["reward"]]
            axes[0][1].fill_between(steps, [m - std.get(s, 0.0) for s, m in zip(steps, mean)],
                                    [m + std.get(s, 0.0) for s, m in zip(steps, mean)], color=view.color, alpha=0.15)
        _plot(axes[0][2], view, "kl")
        _plot(axes[1][0], view, "completions/mean_length")
        for key in ("clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean"):
            if _plot(axes[1][1], view, key, f"{view.name}: {key.split('/')[1]}"):
                break
    flat = [axes[0][0], axes[0][1], axes[0][2], axes[1][0], axes[1][1]]
    for ax, (title, ylabel) in zip(flat, panels):
        _style(ax, title, ylabel)
        if not ax.lines:
            ax.text(0.5, 0.5, "not logged" + (" (beta 0: no reference model)" if ylabel == "kl" else ""),
                    ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#666")
    axes[0][0].legend(fontsize=7, loc="best")
    axes[1][2].axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=9)
    return Chart("grpo", "GRPO training", "Rewards per function and for the group (shaded: ± one std within the group), "
                 "KL, completion length and clip ratio per step (TRL's trainer_state.json, EasyR1's "
                 "experiment_log.jsonl).", fig)


def _optimizer_chart(views: list[RunView]) -> Chart | None:
    if not any(v.series.get("learning_rate") or v.series.get("grad_norm") for v in views):
        return None
    fig, axes = _new_figure(1, 2, height=2.4)
    lr_ax, grad_ax = axes[0]
    for view in views:
        _plot(lr_ax, view, "learning_rate")
        _plot(grad_ax, view, "grad_norm")
    _style(lr_ax, "learning rate", "lr")
    _style(grad_ax, "gradient norm", "norm")
    lr_ax.legend(fontsize=8, loc="best")
    for ax in axes[0]:
        ax.set_xlabel("step", fontsize=9)
    return Chart("optimizer", "Optimizer", "Learning-rate schedule and gradient norm (spikes here precede loss spikes).",
                 fig)


def sample_grid(views: list[RunView]) -> tuple[list[RunView], list[dict[str, Any]]]:
    """Prompts in first-seen order, each with the reference answer and every run's answer."""
    rows: dict[str, dict[str, Any]] = {}
    with_samples = [v for v in views if v.metrics.get("generation_samples")]
    for view in with_samples:
        for sample in view.metrics["generation_samples"]:
            row = rows.setdefault(sample.get("prompt", ""), {"prompt": sample.get("prompt", ""), "reference": None,
                                                             "answers": {}})
            row["reference"] = row["reference"] or sample.get("reference")
            row["answers"][view.name] = sample.get("response", "")
    return with_samples, list(rows.values())


def rerun_source(data: dict[str, Any]) -> str | None:
    """The run an export or merge came from, when that directory holds a later run now (its settings are not the
    ones this model was made from)."""
    source = data.get("source") if isinstance(data.get("source"), dict) else {}
    if data.get("verb") in ("train", "grpo") or not source.get("run_dir") or not source.get("finished_at"):
        return None
    upstream = manifest.read(Path(source["run_dir"]))
    return source["run_dir"] if upstream and upstream.get("finished_at") != source["finished_at"] else None


def details(view: RunView) -> dict[str, Any]:
    data, config = view.run.data, view.run.config
    model = data.get("model") or {}
    rerun = rerun_source(data)
    if rerun:  # the source's current config is not the one this model was made from
        unknown = f"unknown: {rerun} was run again after this model was made from it"
        config = {"dataset": config.get("dataset"), "learning_rate": unknown}
    return {
        "status": data.get("status"),
        "recipe": (data.get("recipe") or {}).get("name") if isinstance(data.get("recipe"), dict) else data.get("recipe"),
        "base model": model.get("base"),
        "adapters": ", ".join(model.get("adapters") or []) or None,
        "dataset": config.get("dataset"),
        "learning rate": config.get("learning_rate"),
        "epochs": _epochs(view.run.run_dir, config),
        "batch": _batch(config),
        "finished": data.get("finished_at"),
        "directory": str(view.run.run_dir),
    }


def _epochs(run_dir: Path, config: dict[str, Any]) -> str | None:
    """The epochs that ran (the trainer's count), and what stopped it short of num_train_epochs: max_steps."""
    planned = config.get("num_train_epochs")
    state = manifest.trainer_state(run_dir)
    ran = state.get("epoch") if state else None
    if not isinstance(ran, (int, float)) or isinstance(ran, bool):
        return f"{_num(planned)} planned" if planned is not None else None
    max_steps = config.get("max_steps")
    if isinstance(max_steps, int) and max_steps > 0 and (not isinstance(planned, (int, float)) or ran < planned):
        return f"{_num(ran)} (max_steps {max_steps} stopped it; num_train_epochs {_num(planned)})"
    return _num(ran)


def _batch(config: dict[str, Any]) -> str | None:
    per, acc = config.get("per_device_train_batch_size"), config.get("gradient_accumulation_steps")
    return f"{per} per device x {acc} accumulation" if per and acc else None


def render_html(views: list[RunView], chart_list: list[Chart], *, title: str, meta: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    sample_runs, samples = sample_grid(views)
    return template.render(
        title=title, generated=time.strftime("%Y-%m-%d %H:%M:%S"), views=views, meta=meta,
        charts=[{"slug": c.slug, "title": c.title, "caption": c.caption, "svg": _markup(c.svg())} for c in chart_list],
        sample_runs=sample_runs, samples=samples, details={v.name: details(v) for v in views},
    )


def _markup(svg: str):
    from markupsafe import Markup

    return Markup(svg)  # our own matplotlib output; every user string elsewhere is escaped


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return html.escape(str(value))
        return f"{value:.{digits}g}"
    return str(value)


def build(paths: list[str | Path], output: str | Path, *, results: str | Path | None = None, title: str | None = None,
          png_dir: str | Path | None = None) -> tuple[Path, list[Path]]:
    """Write the report (and the charts as PNG files when asked); return their paths."""
    views, meta = collect(paths, results)
    chart_list = charts(views)
    page = render_html(views, chart_list, title=title or f"llf-recipes report: {', '.join(map(str, paths))}", meta=meta)
    pngs = [c.png(Path(png_dir) / f"{c.slug}.png") for c in chart_list] if png_dir else []
    return write_text(output, page), pngs

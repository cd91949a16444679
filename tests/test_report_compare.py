"""The report compares: base -> run rows with coloured deltas and a reading, a benchmark table with standard errors,
and GRPO runs drawn from their trainer_state.json (rewards per function, group reward, length, clipping)."""

import json
import re

import evalruns
import pytest
from conftest import run_cli_subprocess
from evalruns import ENV

zhihu_runs, evaluated, standin_grpo_run = evalruns.zhihu_runs, evalruns.evaluated, evalruns.standin_grpo_run

pytest.importorskip("matplotlib", reason="needs the report extra (matplotlib)")
pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def grpo_report(standin_grpo_run, tmp_path_factory):
    """`eval --baseline` then `report` on the GRPO run."""
    out = tmp_path_factory.mktemp("grpo_report")
    proc = run_cli_subprocess("eval", standin_grpo_run, "--baseline", "--max-new-tokens", "64", "--no-progress",
                              "--max-generation-samples", "1", "-o", out / "results.json", env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli_subprocess("report", standin_grpo_run, "--results", out / "results.json", "-o", out / "report.html",
                              "--png", out / "png", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_grpo_run_is_drawn_and_compared(grpo_report, standin_grpo_run):
    from PIL import Image

    from llf_recipes.eval.training import curves

    page = (grpo_report / "report.html").read_text(encoding="utf-8")
    assert re.findall(r'<figure class="chart" data-chart="(\w+)">', page) == ["grpo", "optimizer"]
    state = json.loads((standin_grpo_run / "trainer_state.json").read_text())
    series = curves(state)
    for name in ("xmlcount", "format", "integer", "correctness"):
        assert len(series[f"rewards/{name}/mean"]) == 2  # two steps, each function's curve
    assert len(series["reward"]) == 2 and len(series["completions/mean_length"]) == 2
    results = json.loads((grpo_report / "results.json").read_text())
    run = results["grpo-gsm8k/grpo"]
    assert f"{run['grpo']['accuracy']:.3g} ({run['grpo']['correct']}/{run['grpo']['rows']})" in page
    assert 'class="compare"' in page and "GRPO accuracy" in page and "grpo-gsm8k/grpo: " in page
    image = Image.open(grpo_report / "png" / "grpo.png").convert("L")
    assert sum(1 for p in image.getdata() if p < 200) > 0.01 * image.width * image.height


def test_comparison_rows_and_benchmarks(zhihu_runs, evaluated, tmp_path):
    """A results file with a base entry and benchmarks: deltas coloured by direction, stderr shown, a reading."""
    results = json.loads(json.dumps(evaluated))
    sft = results["zhihu/sft"]
    results["base:zhihu/sft"] = {**sft, "model_name": "base:zhihu/sft", "method": "base", "baseline_for": "zhihu/sft",
                                 "test_loss": sft["test_loss"] + 0.5, "perplexity": None,
                                 "benchmarks": {"quiz": {"metrics": {"acc,none": 0.25, "acc_stderr,none": 0.1}}}}
    sft.update({"baseline": "base:zhihu/sft", "benchmarks": {"quiz": {"metrics": {"acc,none": 0.75,
                                                                                  "acc_stderr,none": 0.1}}}})
    (tmp_path / "results.json").write_text(json.dumps(results))
    proc = run_cli_subprocess("report", zhihu_runs, "--results", tmp_path / "results.json", "-o",
                              tmp_path / "report.html", env=ENV)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert re.search(r'<td class="num better">-0\.5', page)  # test loss fell: better
    assert re.search(r'<td class="num better">\+0\.5 \(± 0\.14\)', page)  # quiz acc 0.25 -> 0.75, beyond noise
    assert "zhihu/sft: improved test loss" in page and "quiz acc 0.25 → 0.75" in page
    assert 'class="benchmarks"' in page and "acc 0.75 ± 0.1" in page and "acc 0.25 ± 0.1" in page


def test_easyr1_metric_log_becomes_the_same_curves(tmp_path):
    """EasyR1's experiment_log.jsonl (one nested object per step) maps onto TRL's names for the GRPO chart."""
    from llf_recipes.eval.training import diagnose_grpo, easyr1_curves

    lines = [{"step": s, "reward": {"overall": 0.5 * s, "correctness": 0.25 * s, "format": 0.1},
              "actor": {"kl_loss": 0.01 * s, "pg_clipfrac_higher": 0.0, "lr": 1e-6},
              "response_length": {"mean": 100.0 + s}} for s in (1, 2, 3)]
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "experiment_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    series = easyr1_curves(tmp_path)
    assert series["reward"] == [(1, 0.5), (2, 1.0), (3, 1.5)]
    assert series["rewards/correctness/mean"] == [(1, 0.25), (2, 0.5), (3, 0.75)]
    assert series["kl"][-1] == (3, pytest.approx(0.03)) and series["completions/mean_length"][0] == (1, 101.0)
    assert series["clip_ratio/high_mean"] == [(1, 0.0), (2, 0.0), (3, 0.0)]
    assert [f.message for f in diagnose_grpo(series)] == ["group reward rose (0.5 -> 1.5)"]

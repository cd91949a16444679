"""`report`: one self-contained HTML page from real runs and their evaluation results; the reading of the curves."""

import json
import math
import re

import evalruns
import pytest
from conftest import run_cli_subprocess
from evalruns import ENV, poisoned_env

zhihu_runs, evaluated = evalruns.zhihu_runs, evalruns.evaluated  # session fixtures (see evalruns.py)

pytest.importorskip("matplotlib", reason="needs the report extra (matplotlib)")


@pytest.fixture(scope="module")
def report(evaluated, zhihu_runs, tmp_path_factory):
    """The report of the session's runs, with one sample rewritten to carry markup that must come out escaped."""
    out = tmp_path_factory.mktemp("report")
    results = json.loads(json.dumps(evaluated))
    results["zhihu/sft"]["generation_samples"][0]["response"] = "<script>alert(1)</script> & <b>bold</b>"
    (out / "results.json").write_text(json.dumps(results, ensure_ascii=False))
    proc = run_cli_subprocess("report", zhihu_runs, "-o", out / "report.html", "--results", out / "results.json",
                              "--png", out / "png", env=ENV)
    assert proc.returncode == 0, proc.stderr
    return out


def test_report_is_one_self_contained_page(report, evaluated):
    page = (report / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.replace("&lt;script", "")  # no script of ours, the sample's came out escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    for pattern in (r"\bsrc\s*=", r"<link\b", r"@import", r"url\(\s*['\"]?(https?:)?//", r"<iframe", r"<img\b"):
        assert not re.search(pattern, page), pattern  # nothing the page would fetch
    assert re.findall(r'<figure class="chart" data-chart="(\w+)">\s*<svg', page) == ["loss", "preference", "optimizer"]
    assert "default-src 'none'" in page  # and the browser is told to fetch nothing anyway
    for name in evalruns.RUN_NAMES:
        assert name in page
    dpo = evaluated["zhihu/dpo"]
    assert f"{dpo['preference_accuracy']:.3g} ({dpo['preference_correct']}/{dpo['preference_total']})" in page
    assert f"{evaluated['zhihu/sft']['test_loss']:.4g}" in page
    sample = evaluated["zhihu/dpo"]["generation_samples"][0]
    assert sample["prompt"] in page and sample["reference"] in page  # samples side by side with the reference


def test_charts_export_to_png(report):
    from PIL import Image

    for name in ("loss", "preference", "optimizer"):
        image = Image.open(report / "png" / f"{name}.png").convert("L")
        assert image.width > 600 and image.height > 200
        dark = sum(1 for p in image.getdata() if p < 200)
        assert dark > 0.01 * image.width * image.height, name  # drawn: axes, lines, text


def test_report_without_evaluation_results(zhihu_runs, tmp_path, cli):
    """Curves and training metrics alone, straight from trainer_state.json, for a run not evaluated yet."""
    out = tmp_path / "sft.html"
    code, _, err = cli("report", zhihu_runs / "zhihu" / "sft", "-o", out)
    assert code == 0, err
    page = out.read_text(encoding="utf-8")
    assert "no evaluation_results.json yet" in page and "zhihu/sft" in page and "zhihu/dpo" not in page
    assert re.findall(r'data-chart="(\w+)"', page) == ["loss", "optimizer"]  # an sft run logs no rewards
    state = json.loads((zhihu_runs / "zhihu" / "sft" / "trainer_state.json").read_text())
    first = next(h["loss"] for h in state["log_history"] if "loss" in h)
    assert f"{first:.4g} →" in page


def test_report_does_not_import_torch(zhihu_runs, tmp_path):
    proc = run_cli_subprocess("report", zhihu_runs, "-o", tmp_path / "r.html", env={**ENV, **poisoned_env(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.html").is_file()


def test_report_errors(tmp_path, cli):
    code, _, err = cli("report", tmp_path)
    assert code == 2 and "no run found" in err
    code, _, err = cli("report", tmp_path / "missing")
    assert code == 2 and "does not exist" in err


def curve(values, start=1):
    return [(start + i, float(v)) for i, v in enumerate(values)]


def test_diagnose_reads_the_curves():
    from llf_recipes.eval.training import diagnose

    healthy = diagnose({"loss": curve([2.0, 1.6, 1.3, 1.1, 1.0]), "eval_loss": curve([2.1, 1.8, 1.5])})
    assert [f.level for f in healthy] == ["ok"]

    overfit = diagnose({"loss": curve([2.0, 1.5, 1.0, 0.6, 0.3, 0.1]),
                        "eval_loss": [(2, 1.6), (4, 1.2), (6, 1.5)]})
    assert [f.level for f in overfit] == ["bad"] and "overfitting" in overfit[0].message
    assert overfit[0].steps == [4]  # the best checkpoint to go back to

    nan = diagnose({"loss": curve([2.0, 1.9, math.nan, math.nan])})
    assert nan[0].level == "bad" and "step 3" in nan[0].message

    flat = diagnose({"loss": curve([2.0, 2.0, 1.99, 2.0, 2.0, 1.995])})
    assert any("not falling" in f.message for f in flat)

    spike = diagnose({"loss": curve([2.0, 1.8, 1.6, 9.0, 1.5, 1.4, 1.3, 1.2, 1.1, 1.0])})
    assert any("spiked at step 4" in f.message for f in spike)

    assert diagnose({"loss": curve([2.0, 1.0])}) == []  # two points say nothing


def test_the_stage_table_uses_the_manifests_discovery_read_and_the_summarys_figures(tmp_path, monkeypatch):
    """Every stage is listed, trained or not, each manifest read once for runs and stages together; the figures are
    the numeric final metrics, as the run summary picks them (a flag or a text is no figure)."""
    from llf_recipes import manifest, summary
    from llf_recipes.report import collect

    recipe = {"name": "mine", "path": "recipes/mine.yaml", "hash": "x"}
    sft, answers = tmp_path / "mine" / "sft", tmp_path / "mine" / "generate"
    manifest.write(sft, {"recipe": recipe, "stage": "sft", "verb": "train", "stage_index": 0, "status": "completed",
                         "duration_s": 12.5, "model": {"base": "m", "adapters": [str(sft)], "template": "qwen"},
                         "metrics": {"train_loss": 1.25, "epoch": 1.0, "is_world_process_zero": True}})
    manifest.write(answers, {"recipe": recipe, "stage": "generate", "verb": "generate", "stage_index": 1,
                             "status": "failed", "metrics": {"prompts": 4, "answers": 16, "backend": "hf",
                                                             "pairs": False}})
    reads = []
    real = manifest.read

    def counted(path):
        reads.append(str(path))
        return real(path)

    monkeypatch.setattr(manifest, "read", counted)
    views, meta = collect([tmp_path])
    assert [v.name for v in views] == ["mine/sft"]
    assert sorted(reads) == sorted({str(manifest.path_for(sft)), str(manifest.path_for(answers))})
    assert [(r["stage"], r["status"], r["figures"]) for r in meta["stages"]] == [
        ("mine/sft", "completed", "mean train loss (all steps) 1.25"), ("mine/generate", "failed", "prompts 4, answers 16")]
    assert summary._metrics(real(answers)) == "answers 16"


@pytest.mark.parametrize("smoke", [True, False])
def test_a_short_smoke_run_is_read_as_what_it_is(tmp_path, smoke):
    """Three steps of a random tiny model: no learning-rate advice from its flat loss, the epochs that ran (max_steps
    stopped it), and the mean train loss named as such beside the per-step losses."""
    from llf_recipes import manifest
    from llf_recipes.report import collect, details

    run_dir = tmp_path / "mine" / "sft"
    config = {"stage": "sft", "num_train_epochs": 3.0, "max_steps": 3, "learning_rate": 1e-4}
    manifest.write(run_dir, {"recipe": {"name": "mine"}, "stage": "sft", "verb": "train", "stage_index": 0,
                             "status": "completed", "config": config, "layout": {"source": "smoke" if smoke else "gpus"},
                             "model": {"base": "m", "adapters": [str(run_dir)], "template": "qwen"},
                             "metrics": {"train_loss": 7.053, "epoch": 1 / 3}})
    log = [{"step": i, "epoch": i / 9, "loss": v} for i, v in ((1, 7.034), (2, 7.051), (3, 7.074))]
    (run_dir / "trainer_state.json").write_text(json.dumps({"global_step": 3, "epoch": 1 / 3, "log_history": log}))
    views, meta = collect([tmp_path])
    messages = [f"{f.message} {f.advice}" for f in views[0].findings]
    if smoke:
        assert [f.level for f in views[0].findings] == ["ok"] and "smoke run: 3 logged step(s)" in messages[0]
        assert not any("learning rate" in m for m in messages)
    else:  # the same curve from a real run is worth the warning
        assert any("not falling" in m and "raise the learning rate" in m for m in messages)
    assert details(views[0])["epochs"] == "0.3333 (max_steps 3 stopped it; num_train_epochs 3)"
    assert meta["stages"][0]["figures"] == "mean train loss (all steps) 7.053"


def test_evaluation_results_of_an_earlier_run_of_a_directory_are_left_out_with_a_note(tmp_path):
    """An entry scores the run whose finished_at it recorded; an older entry without it, a run that finished after
    the results file was written. Either way the current run's row must not show the old figures."""
    import os

    from llf_recipes import manifest
    from llf_recipes.report import collect

    recipe = {"name": "mine", "path": "recipes/mine.yaml", "hash": "x"}
    dirs = {name: tmp_path / "mine" / name for name in ("sft", "dpo", "kto")}
    for i, (name, path) in enumerate(dirs.items()):
        manifest.write(path, {"recipe": recipe, "stage": name, "verb": "train", "stage_index": i,
                              "status": "completed", "finished_at": "2026-01-02T10:00:00+0000",
                              "model": {"base": "m", "adapters": [str(path)], "template": "qwen"}})
    results = tmp_path / "evaluation_results.json"
    entry = {"method": "sft", "base_model": "m", "test_loss": 9.5, "perplexity": 13359.7}
    results.write_text(json.dumps({
        "mine/sft": {**entry, "model_name": "mine/sft", "model_path": str(dirs["sft"]),
                     "run_finished_at": "2026-01-02T10:00:00+0000"},  # this run: kept
        "mine/dpo": {**entry, "model_name": "mine/dpo", "model_path": str(dirs["dpo"]),
                     "run_finished_at": "2026-01-01T09:00:00+0000"},  # an earlier run
        "mine/kto": {**entry, "model_name": "mine/kto", "model_path": str(dirs["kto"])},  # unstamped, file older
    }))
    written = 1767344400  # 2026-01-02T09:00:00Z
    os.utime(results, (written, written))
    views, meta = collect([tmp_path / "mine"], results)
    assert meta["stale"] == ["mine/dpo", "mine/kto"]
    by_name = {v.name: v.metrics for v in views}
    assert by_name["mine/sft"].get("test_loss") == 9.5
    assert by_name["mine/dpo"].get("test_loss") is None and by_name["mine/kto"].get("test_loss") is None
    os.utime(results, (written + 7200, written + 7200))  # written after the unstamped run finished: current
    assert collect([tmp_path / "mine"], results)[1]["stale"] == ["mine/dpo"]


def test_an_export_whose_source_was_run_again_shows_no_settings_of_the_newer_run(tmp_path):
    from llf_recipes import manifest
    from llf_recipes.report import collect, details

    recipe = {"name": "mine", "path": "recipes/mine.yaml", "hash": "x"}
    dpo, merged = tmp_path / "mine" / "dpo", tmp_path / "mine" / "dpo-merged"
    manifest.write(dpo, {"recipe": recipe, "stage": "dpo", "verb": "train", "stage_index": 0, "status": "completed",
                         "finished_at": "2026-01-02T10:00:00+0000", "config": {"learning_rate": 5e-6},
                         "model": {"base": "m", "adapters": [str(dpo)], "template": "qwen"}})
    source = {"run_dir": str(dpo.resolve()), "finished_at": "2026-01-01T10:00:00+0000", "config_hash": "h"}
    manifest.write(merged, {"recipe": recipe, "stage": "dpo-merged", "verb": "export", "status": "completed",
                            "source": source, "finished_at": "2026-01-01T11:00:00+0000",
                            "model": {"base": str(merged), "adapters": [], "merged": True}})
    rows = {v.name: details(v) for v in collect([tmp_path / "mine"])[0]}
    assert rows["mine/dpo"]["learning rate"] == 5e-6
    assert rows["mine/dpo-merged"]["learning rate"].startswith(f"unknown: {dpo.resolve()} was run again")
    manifest.write(merged, {**manifest.read(merged), "source": {**source, "finished_at": "2026-01-02T10:00:00+0000"}})
    rows = {v.name: details(v) for v in collect([tmp_path / "mine"])[0]}
    assert rows["mine/dpo-merged"]["learning rate"] == 5e-6  # made from the run there now

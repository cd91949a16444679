"""`eval` on real tiny-model runs (sft and dpo LoRA adapters, and the dpo run exported into a full model).

What is checked: every key of seed 004's evaluation_results.json, the training metrics against trainer_state.json, the
held-out losses against the numbers LLaMA-Factory's own trainer logged on the same rows, preference accuracy on
hand-made pairs whose answer is known whatever the model, and the CLI's filters and errors.
"""

import json
import math

import evalruns
import pytest
from conftest import run_cli_subprocess
from evalruns import ENV, RUN_NAMES

# Session fixtures shared with the report and merge tests (built once, see evalruns.py).
zhihu_runs, evaluated = evalruns.zhihu_runs, evalruns.evaluated

pytestmark = pytest.mark.engine

# evaluation_results.json per run, as seed 004 documents it.
SEED_KEYS = ("model_name", "model_path", "initial_train_loss", "final_train_loss", "best_eval_loss", "final_eval_loss",
             "total_steps", "training_time_seconds", "training_time_hours", "perplexity", "test_loss",
             "preference_accuracy", "preference_correct", "preference_total", "avg_chosen_loss", "avg_rejected_loss",
             "loss_margin", "generation_samples")


def state_of(run_dir):
    return json.loads((run_dir / "trainer_state.json").read_text())


def test_every_seed_key_for_every_run(evaluated, zhihu_runs):
    assert set(RUN_NAMES) <= set(evaluated)
    for name in RUN_NAMES:
        record = evaluated[name]
        missing = [k for k in SEED_KEYS if k not in record]
        assert not missing, f"{name} lacks {missing}"
        assert record["model_name"] == name
        assert record["model_path"] == str((zhihu_runs / name).resolve())
        assert record["test_loss"] > 0 and record["perplexity"] == pytest.approx(math.exp(record["test_loss"]))
        assert record["test_data"]["rows"] == 4  # val_size 0.25 of smoke's 16 rows
        assert len(record["generation_samples"]) == 2
        for sample in record["generation_samples"]:
            assert isinstance(sample["prompt"], str) and sample["prompt"]
            assert isinstance(sample["response"], str)
            assert sample["reference"]  # the held-out answer, for the report's side-by-side


def test_training_metrics_come_from_trainer_state(evaluated, zhihu_runs):
    for name in ("zhihu/sft", "zhihu/dpo"):
        record, history = evaluated[name], state_of(zhihu_runs / name)["log_history"]
        train = [h["loss"] for h in history if "loss" in h]
        evals = [h["eval_loss"] for h in history if "eval_loss" in h]
        runtime = next(h["train_runtime"] for h in history if "train_runtime" in h)
        assert record["initial_train_loss"] == train[0] and record["final_train_loss"] == train[-1]
        assert record["best_eval_loss"] == min(evals) and record["final_eval_loss"] == evals[-1]
        assert record["total_steps"] == 3 and len(evals) == 3
        assert record["training_time_seconds"] == runtime
        assert record["training_time_hours"] == pytest.approx(runtime / 3600)
    exported = evaluated["zhihu/dpo-merged"]  # no training happened there
    assert exported["total_steps"] is None and exported["training_time_seconds"] is None


def test_preference_metrics_of_the_runs(evaluated):
    sft, dpo = evaluated["zhihu/sft"], evaluated["zhihu/dpo"]
    # sft was held out on single answers: no pairs to rank unless --pref-dataset names some
    assert sft["test_data"]["kind"] == "sft" and sft["preference_accuracy"] is None
    assert dpo["test_data"]["kind"] == "pairs" and dpo["preference_total"] == 4
    assert dpo["preference_accuracy"] == dpo["preference_correct"] / 4
    assert dpo["loss_margin"] == pytest.approx(dpo["avg_rejected_loss"] - dpo["avg_chosen_loss"])


def test_exported_model_scores_like_its_adapter(evaluated):
    """The same weights loaded two ways (base + LoRA adapter, merged full model) give the same numbers."""
    lora, full = evaluated["zhihu/dpo"], evaluated["zhihu/dpo-merged"]
    assert full["adapters"] == [] and lora["adapters"]
    assert full["test_data"] == lora["test_data"]  # the export is tested on its source run's held-out rows
    for key in ("test_loss", "avg_chosen_loss", "avg_rejected_loss"):
        assert full[key] == pytest.approx(lora[key], rel=1e-5), key
    assert full["preference_correct"] == lora["preference_correct"]


def test_losses_match_llamafactory_own_evaluation(zhihu_runs):
    """Our held-out rows, template, truncation and adapter loading reproduce the trainer's last evaluation:
    sft's eval_loss (the mean of per-row losses with one row per batch) and dpo's summed log-probabilities."""
    import torch

    from llf_recipes.eval import scoring, session
    from llf_recipes.eval.runs import Options, discover

    runs = {r.name: r for r in discover([zhihu_runs / "zhihu"])[0]}
    options = Options(generation_samples=0)
    sft_plan = session.prepare(runs["zhihu/sft"], options)
    net = scoring.load_model(sft_plan.model, "cpu", torch.float32)
    losses = scoring.sequence_losses(net, *sft_plan.jobs["test"], pad_id=sft_plan.pad_id, batch_size=3)
    last = [h for h in state_of(zhihu_runs / "zhihu/sft")["log_history"] if "eval_loss" in h][-1]
    assert len(losses) == 4
    assert sum(x.mean for x in losses) / len(losses) == pytest.approx(last["eval_loss"], rel=1e-5)

    dpo_plan = session.prepare(runs["zhihu/dpo"], options)
    net = scoring.load_model(dpo_plan.model, "cpu", torch.float32)
    last = [h for h in state_of(zhihu_runs / "zhihu/dpo")["log_history"] if "eval_loss" in h][-1]
    for side in ("chosen", "rejected"):
        sums = scoring.sequence_losses(net, *dpo_plan.jobs[side], pad_id=dpo_plan.pad_id)
        assert -sum(x.nll for x in sums) / len(sums) == pytest.approx(last[f"eval_logps/{side}"], rel=1e-5), side


def test_preference_metrics_arithmetic():
    from llf_recipes.eval.scoring import preference_metrics

    got = preference_metrics([0.5, 1.0, 2.0, 3.0], [1.5, 0.9, 2.5, 3.0])  # right, wrong, right, tie (not right)
    assert got["preference_correct"] == 2 and got["preference_total"] == 4 and got["preference_accuracy"] == 0.5
    assert got["avg_chosen_loss"] == pytest.approx(1.625) and got["avg_rejected_loss"] == pytest.approx(1.975)
    assert got["loss_margin"] == pytest.approx(0.35)
    empty = preference_metrics([], [])
    assert empty["preference_accuracy"] is None and empty["preference_total"] == 0


def test_preference_accuracy_on_hand_made_pairs(zhihu_runs, tmp_path):
    """Pairs (A, B), (B, A) and (A, A) on one prompt: whatever the model, exactly one of the first two is ranked
    right, the tie is not, and the margins cancel: accuracy 1/3, margin 0."""
    a, b = "先制定计划，再每天坚持练习。", "The weather is nice today, let us go outside."
    rows = [{"instruction": "如何学好编程？", "input": "", "chosen": c, "rejected": r} for c, r in ((a, b), (b, a), (a, a))]
    data = tmp_path / "data"
    data.mkdir()
    (data / "handmade.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    entry = {"file_name": "handmade.jsonl", "formatting": "alpaca", "ranking": True,
             "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected",
                         "history": None, "system": None}}
    (data / "dataset_info.json").write_text(json.dumps({"handmade": entry}))
    out = tmp_path / "results.json"
    proc = run_cli_subprocess("eval", zhihu_runs / "zhihu" / "sft", "--pref-dataset", "handmade", "--data-dir", data,
                              "--skip-perplexity", "--max-generation-samples", "0", "-o", out, "--no-progress", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())["zhihu/sft"]
    assert record["preference_total"] == 3 and record["preference_correct"] == 1
    assert record["preference_accuracy"] == pytest.approx(1 / 3)
    assert record["loss_margin"] == pytest.approx(0.0, abs=1e-6)
    assert record["avg_chosen_loss"] == pytest.approx(record["avg_rejected_loss"], rel=1e-6)
    assert record["perplexity"] is None and record["test_loss"] is None  # --skip-perplexity
    assert record["preference_data"]["source"] == "handmade (all rows)"


def test_methods_filter_keeps_other_entries(evaluated, zhihu_runs, tmp_path):
    out = tmp_path / "results.json"
    out.write_text(json.dumps(evaluated))
    proc = run_cli_subprocess("eval", zhihu_runs, "--methods", "sft", "--max-samples", "0",
                              "--max-generation-samples", "0", "-o", out, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "zhihu/sft" in proc.stdout and "zhihu/dpo" not in proc.stdout
    results = json.loads(out.read_text())
    assert results["zhihu/dpo"] == evaluated["zhihu/dpo"]  # not evaluated now: kept as it was
    assert results["zhihu/sft"]["test_loss"] is None  # --max-samples 0: training metrics only
    assert results["zhihu/sft"]["final_train_loss"] == evaluated["zhihu/sft"]["final_train_loss"]


def test_eval_errors_name_the_problem(zhihu_runs, tmp_path, cli):
    code, _, err = cli("eval", tmp_path)
    assert code == 2 and "no completed run" in err
    code, _, err = cli("eval", zhihu_runs / "zhihu" / "sft", "--dataset", "no_such_set", "--no-progress")
    assert code == 2 and "no_such_set" in err and "dataset_info.json" in err
    code, _, err = cli("eval", zhihu_runs, "--batch-size", "0")
    assert code == 2 and "--batch-size" in err
    (tmp_path / "broken.json").write_text("{not json")
    code, _, err = cli("eval", zhihu_runs / "zhihu" / "sft", "--max-samples", "0", "--max-generation-samples", "0",
                       "-o", tmp_path / "broken.json")
    assert code == 2 and "broken.json:1" in err

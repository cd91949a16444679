"""`bench` runs lm-evaluation-harness for real on CPU: two task files of our own (a multiple-choice quiz and a short
generation task) via --include-path, base vs a tiny-model run; the scores it keeps equal lm-eval's own CLI output for
the same model, adapter and tasks."""

import json
import os

import evalruns
import pytest
from conftest import run_cli_subprocess
from evalruns import ENV

zhihu_runs, evaluated = evalruns.zhihu_runs, evalruns.evaluated

pytestmark = pytest.mark.engine

TASKS = "llf_quiz_mc,llf_quiz_gen"


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    pytest.importorskip("lm_eval", reason="needs the bench extra (lm-eval)")
    d = tmp_path_factory.mktemp("lm_eval_tasks")
    quiz = [{"question": f"What is {a} plus {b}?", "choices": [str(a + b), str(a + b + 1), str(a * b + 3)], "answer": 0}
            for a, b in [(1, 2), (3, 4), (5, 6), (2, 2), (7, 1), (4, 4)]]
    (d / "quiz_mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in quiz))
    short = [{"question": f"{a} plus {b}", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (5, 6)]]
    (d / "quiz_gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in short))
    (d / "quiz_mc.yaml").write_text(f"""task: llf_quiz_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {d / "quiz_mc.jsonl"}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""")
    (d / "quiz_gen.yaml").write_text(f"""task: llf_quiz_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {d / "quiz_gen.jsonl"}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: answer
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 2.0
""")
    return d


@pytest.fixture(scope="module")
def benched(zhihu_runs, task_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = run_cli_subprocess("bench", zhihu_runs / "zhihu" / "sft", "--tasks", TASKS, "--include-path", task_dir,
                              "--baseline", "--device", "cpu", "-o", out, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def _lm_eval_cli(tmp_path, task_dir, model_args: str) -> dict:
    out = tmp_path / "lm_eval_out"
    argv = ["-m", "lm_eval", "run", "--model", "hf", "--model_args", model_args, "--tasks", TASKS, "--include_path",
            str(task_dir), "--device", "cpu", "--batch_size", "8", "--output_path", str(out)]
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, **ENV})
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(out.rglob("results_*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text())


def test_bench_scores_base_and_run_as_lm_eval_does(benched, zhihu_runs, tiny_model, task_dir, tmp_path):
    proc, results = benched
    assert list(results) == ["base:zhihu/sft", "zhihu/sft"]
    run_dir = (zhihu_runs / "zhihu" / "sft").resolve()
    ours = results["zhihu/sft"]["benchmarks"]
    theirs = _lm_eval_cli(tmp_path, task_dir, f"pretrained={tiny_model.resolve()},peft={run_dir},tokenizer="
                                              f"{tiny_model.resolve()},dtype=float32,trust_remote_code=False")
    for task in ("llf_quiz_mc", "llf_quiz_gen"):
        expected = {k: v for k, v in theirs["results"][task].items() if not isinstance(v, str)}  # not alias, name
        assert ours[task]["metrics"] == expected, task
        assert ours[task]["version"] == theirs["versions"][task] and ours[task]["n_shot"] == theirs["n-shot"][task]
    assert ours["llf_quiz_mc"]["samples"] == 6 and ours["llf_quiz_gen"]["samples"] == 3
    base = results["base:zhihu/sft"]["benchmarks"]
    assert set(base) == {"llf_quiz_mc", "llf_quiz_gen"}
    assert 0.0 <= base["llf_quiz_mc"]["metrics"]["acc,none"] <= 1.0
    # the progress lines and the table
    assert "[1/2] bench base:zhihu/sft" in proc.stderr and "[2/2] bench zhihu/sft" in proc.stderr
    assert "llf_quiz_mc" in proc.stdout and "acc " in proc.stdout and "±" in proc.stdout


def test_eval_keeps_what_bench_wrote(benched, zhihu_runs, tmp_path):
    _, results = benched
    out = tmp_path / "results.json"
    out.write_text(json.dumps(results))
    proc = run_cli_subprocess("eval", zhihu_runs / "zhihu" / "sft", "--limit", "0", "--max-generation-samples", "0",
                              "-o", out, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out.read_text())["zhihu/sft"]["benchmarks"] == results["zhihu/sft"]["benchmarks"]


def test_bench_errors_are_one_line(zhihu_runs, task_dir, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # in-process: bench would set it for the rest of the process
    code, _, err = cli("bench", zhihu_runs / "zhihu" / "sft", "--tasks", "llf_quiz_mx", "--include-path", task_dir)
    assert code == 2 and "no task 'llf_quiz_mx'" in err and "llf_quiz_mc" in err and "Traceback" not in err
    code, _, err = cli("bench", tmp_path / "no-run", "--tasks", "llf_quiz_mc", "--include-path", task_dir)
    assert code == 2 and "does not exist" in err
    # a task whose dataset is on the hub, offline: which dataset, and how to point at a copy
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "hub.yaml").write_text("task: llf_hub_quiz\ndataset_path: llf-missing/quiz-set\n"
                                                 "test_split: test\noutput_type: multiple_choice\n"
                                                 "doc_to_text: q\ndoc_to_choice: [a, b]\ndoc_to_target: 0\n")
    env = {**ENV, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "empty")}
    proc = run_cli_subprocess("bench", zhihu_runs / "zhihu" / "sft", "--tasks", "llf_hub_quiz", "--include-path",
                              tmp_path / "tasks", "-o", tmp_path / "r.json", env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "llf-missing/quiz-set" in proc.stderr and "HF_DATASETS_CACHE" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r.json").exists()

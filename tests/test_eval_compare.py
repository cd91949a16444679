"""`eval` comparing runs with their base: the baseline on the same rows, bare models, GRPO runs scored through their
rewards, and the forgetting check on a planted regression. Real tiny-model runs (evalruns.py), built once."""

import json
import shutil

import evalruns
import pytest
from conftest import run_cli_subprocess
from evalruns import ENV, STANDIN_ANSWER

zhihu_runs, evaluated, standin_grpo_run = evalruns.zhihu_runs, evalruns.evaluated, evalruns.standin_grpo_run

pytestmark = pytest.mark.engine


def _eval(*argv, out):
    proc = run_cli_subprocess("eval", *argv, "-o", out, "--no-progress", env=ENV, timeout=900)
    return proc, (json.loads(out.read_text()) if out.is_file() else {})


def _transformers_loss(model_path, ids, labels) -> float:
    """Token-weighted mean of transformers' own causal-LM loss, row by row (no padding, no code of ours)."""
    import torch
    from transformers import AutoModelForCausalLM

    net = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    total = tokens = 0.0
    with torch.inference_mode():
        for row_ids, row_labels in zip(ids, labels):
            n = sum(1 for x in row_labels[1:] if x != -100)
            loss = net(input_ids=torch.tensor([row_ids]), labels=torch.tensor([row_labels])).loss
            total += float(loss) * n
            tokens += n
    return total / tokens


def test_baseline_scores_the_base_on_the_same_rows(zhihu_runs, tiny_model, tmp_path):
    from llf_recipes.eval import session
    from llf_recipes.eval.runs import Options, base_run, discover

    out = tmp_path / "results.json"
    proc, results = _eval(zhihu_runs / "zhihu" / "sft", "--baseline", "--max-generation-samples", "0", out=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(results) == ["base:zhihu/sft", "zhihu/sft"]
    base, run = results["base:zhihu/sft"], results["zhihu/sft"]
    assert base["method"] == "base" and base["base_model"] == str(tiny_model.resolve()) and base["adapters"] == []
    assert base["test_data"] == run["test_data"] and run["test_data"]["rows"] == 4
    assert run["baseline"] == "base:zhihu/sft"
    assert run["delta"]["test_loss"] == pytest.approx(run["test_loss"] - base["test_loss"])
    assert base["test_loss"] != run["test_loss"]  # the adapter is not loaded into the base

    # The base's loss, recomputed with transformers alone on the rows LLaMA-Factory's processor built for it.
    runs = {r.name: r for r in discover([zhihu_runs / "zhihu"])[0]}
    plan = session.prepare(base_run(runs["zhihu/sft"]), Options(generation_samples=0))
    assert base["test_loss"] == pytest.approx(_transformers_loss(tiny_model, *plan.jobs["test"]), rel=1e-5)
    assert "zhihu/sft vs its base: test loss" in proc.stdout


def test_a_bare_model_directory_is_evaluated(zhihu_runs, tiny_model, tmp_path):
    data = zhihu_runs.parent / "data"
    out = tmp_path / "results.json"
    proc, results = _eval(tiny_model, "--dataset", "zhihu_sft", "--data-dir", data, "--template", "qwen",
                          "--limit", "5", "--max-generation-samples", "1", "--max-new-tokens", "4", out=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = results[tiny_model.name]
    assert record["method"] == "base" and record["model_path"] == str(tiny_model.resolve())
    assert record["test_data"] == {"source": "zhihu_sft (all rows)", "kind": "sft", "rows": 5}
    assert record["test_loss"] > 0 and record["total_steps"] is None
    assert len(record["generation_samples"]) == 1


def test_an_unknown_model_or_run_is_one_line(tmp_path, cli):
    code, _, err = cli("eval", tmp_path / "nothing-here")
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    code, _, err = cli("eval", "nobody/no-such-model")
    assert code == 2 and "no-such-model" in err and "Traceback" not in err


HANDMADE = [("Sam has 70 apples and buys 2 more. How many apples does Sam have?", "72"),
            ("What is 3 + 4?", "7"),
            ("A shelf holds 8 rows of 9 books. How many books?", "72"),
            ("How many legs do 2 cats have?", "8")]


def test_grpo_run_accuracy_on_a_hand_made_set(standin_grpo_run, tmp_path):
    """The stand-in always answers 72: accuracy 2/4 on this set, format 4/4, through the run's own rewards; the
    prompts carry the system/format prompt the run was trained with."""
    from llf_recipes.data.gsm8k import to_grpo_row

    rows = tmp_path / "handmade.jsonl"
    rows.write_text("".join(json.dumps(to_grpo_row(q, a, one_shot=False)) + "\n" for q, a in HANDMADE))
    out = tmp_path / "results.json"
    proc, results = _eval(standin_grpo_run, "--dataset", rows, "--baseline", "--max-new-tokens", "64",
                          "--max-generation-samples", "4", out=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("grpo-gsm8k/grpo", "base:grpo-gsm8k/grpo"):
        grpo = results[name]["grpo"]
        assert grpo["rows"] == 4 and grpo["correct"] == 2 and grpo["accuracy"] == 0.5, name
        assert grpo["format_rate"] == 1.0
        assert grpo["rewards"] == {"xmlcount": 0.5, "format": 0.5, "integer": 0.5, "correctness": 1.0}
        assert grpo["mean_reward"] == pytest.approx(2.5)
    run = results["grpo-gsm8k/grpo"]
    assert run["method"] == "grpo" and run["total_steps"] == 2
    assert [s["response"] for s in run["generation_samples"]] == [STANDIN_ANSWER] * 4
    assert [s["correct"] for s in run["generation_samples"]] == [a == "72" for _, a in HANDMADE]
    assert run["delta"]["accuracy"] == 0.0
    assert "0.500 (2/4)" in proc.stdout


def test_grpo_run_on_its_held_out_split(standin_grpo_run, tmp_path):
    """Without --dataset: the run's data file split as EasyR1 splits it (val_size 0.05 of the sample's rows)."""
    out = tmp_path / "results.json"
    proc, results = _eval(standin_grpo_run, "--max-new-tokens", "64", "--max-generation-samples", "1", out=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = results["grpo-gsm8k/grpo"]
    data_file = standin_grpo_run.parent.parent.parent / "data" / "gsm8k_grpo.jsonl"
    answers = [json.loads(line)["answer"] for line in data_file.read_text().splitlines() if line.strip()]
    held = max(1, round(len(answers) * 0.05))
    assert record["grpo"]["rows"] == held
    assert "val_size 0.05 split" in record["test_data"]["source"]
    assert "the TRL engine trained on every row" in record["test_data"]["source"]
    assert record["grpo"]["format_rate"] == 1.0


def _damaged_copy(run_dir, dest):
    """The run moved to `dest` with its LoRA matrices replaced by large random values: a broken model."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(run_dir, dest)
    manifest = json.loads((dest / "llf-run.json").read_text())
    manifest["model"]["adapters"] = [str(dest) if a == str(run_dir.resolve()) else a for a in manifest["model"]["adapters"]]
    manifest["recipe"] = {"name": "damaged"}
    (dest / "llf-run.json").write_text(json.dumps(manifest))
    weights = load_file(str(dest / "adapter_model.safetensors"))
    generator = torch.Generator().manual_seed(0)
    for key, tensor in weights.items():
        if "lora_A" in key or "lora_B" in key:
            weights[key] = torch.randn(tensor.shape, generator=generator) * 10.0
    save_file(weights, str(dest / "adapter_model.safetensors"))
    return dest


def test_forgetting_check_flags_a_damaged_run_and_passes_a_sound_one(zhihu_runs, tiny_model, tmp_path):
    """Items whose answer is the choice the base model prefers (read from a first pass on the bare base): the base
    scores 1.0; the smoke run (three steps at lr 1e-5) keeps that, the damaged copy loses it."""
    words = ["apple", "river", "stone", "cloud", "green", "seven", "table", "light", "music", "paper", "north", "sugar"]
    items = [{"question": f"Pick a word ({i}).", "choices": [words[i % 12], words[(i + 5) % 12], words[(i + 7) % 12]],
              "answer": 0} for i in range(15)]
    general = tmp_path / "general.jsonl"
    general.write_text("".join(json.dumps(item) + "\n" for item in items))
    proc, first = _eval(tiny_model, "--template", "qwen", "--general", general, "--limit", "0",
                        "--max-generation-samples", "0", out=tmp_path / "first.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    picked = first[tiny_model.name]["general"]["picked"]
    general.write_text("".join(json.dumps({**item, "answer": p}) + "\n" for item, p in zip(items, picked)))

    damaged = _damaged_copy(zhihu_runs / "zhihu" / "sft", tmp_path / "runs" / "damaged" / "sft")
    out = tmp_path / "results.json"
    proc, results = _eval(zhihu_runs / "zhihu" / "sft", damaged, "--general", general, "--limit", "0",
                          "--max-generation-samples", "0", out=out)
    assert proc.returncode == 1, proc.stderr[-3000:]  # a failed acceptance check
    assert "forgetting check failed: damaged/sft" in proc.stderr
    sound, broken = results["zhihu/sft"]["forgetting"], results["damaged/sft"]["forgetting"]
    assert sound["checked"] and broken["checked"]
    assert sound["base_accuracy"] == broken["base_accuracy"] == 1.0
    assert not sound["flagged"] and sound["drop"] <= 0.05
    assert broken["flagged"] and broken["drop"] > 0.25 and len(broken["regressed_items"]) >= 4
    assert results["base:zhihu/sft"]["general"]["items"] == 15
    assert "damaged/sft forgetting check: general accuracy" in proc.stdout and "FORGETTING" in proc.stdout


def test_ask_and_chat_prompt_a_grpo_run_with_its_training_system_prompt(standin_grpo_run, tiny_model):
    """The inference config of a GRPO run carries the system message its prompts had; LLaMA-Factory's template puts
    it into the prompt `ask`/`chat` send."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoTokenizer

    from llf_recipes.data.gsm8k import SYSTEM_PROMPT
    from llf_recipes.use import infer_config

    data = json.loads((standin_grpo_run / "llf-run.json").read_text())
    config = infer_config(standin_grpo_run, data)
    assert config["default_system"] == SYSTEM_PROMPT
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template=config["template"],
                                                                       default_system=config["default_system"]))
    ids, _ = template.encode_oneturn(tokenizer, [{"role": "user", "content": "What is 2 + 3?"},
                                                 {"role": "assistant", "content": ""}])
    assert "<answer>" in tokenizer.decode(ids)


def test_help_and_unknown_runs_need_no_torch(tmp_path):
    env = {**ENV, **evalruns.poisoned_env(tmp_path)}
    for argv in (["eval", "--help"], ["bench", "--help"]):
        proc = run_cli_subprocess(*argv, env=env)
        assert proc.returncode == 0 and "imported" not in proc.stderr, proc.stderr
    for verb in ("eval", "bench"):
        proc = run_cli_subprocess(verb, tmp_path / "no-run", *(["--tasks", "x"] if verb == "bench" else []), env=env)
        assert proc.returncode == 2 and "does not exist" in proc.stderr and "imported" not in proc.stderr, proc.stderr

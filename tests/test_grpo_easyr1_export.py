"""An EasyR1 LoRA run's result: its latest (or best) checkpoint's adapter becomes the run's model, and `export`
merges it into a Hugging Face model. The checkpoints are written in EasyR1's layout (global_step_N/actor/
lora_adapter + huggingface/, checkpoint_tracker.json) with PEFT on the tiny model, since EasyR1 itself needs GPUs."""

import json

import pytest
from conftest import run_cli_subprocess

from llf_recipes import manifest
from llf_recipes.engines.grpo_plan import plan_grpo
from llf_recipes.hardware import parse_gpus
from llf_recipes.render import Overrides, Renderer

pytestmark = pytest.mark.engine


def write_checkpoint(actor, tiny_model, seed):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter: B is no longer zero
    model.save_pretrained(actor / "lora_adapter")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(actor / "huggingface")


def test_latest_and_best_checkpoints_become_the_model_and_export_merges_them(tiny_model, tmp_path, monkeypatch, cli, catalog):
    from safetensors.torch import load_file

    monkeypatch.chdir(tmp_path)
    assert cli("prepare", "gsm8k_grpo", "--sample", "--data-dir", "data")[0] == 0
    recipe = catalog.recipe("grpo-gsm8k")
    stage = Renderer(recipe, parse_gpus("0"), Overrides.parse([f"model_name_or_path={tiny_model}"], recipe), catalog).render_all()[0]
    plan, findings = plan_grpo(stage, catalog, "easyr1")
    assert not [f for f in findings if f.severity == "error"]
    plan.write_files()
    run_dir = plan.config_path.parent
    checkpoints = run_dir / "checkpoints"
    for step in (1, 2):
        write_checkpoint(checkpoints / f"global_step_{step}" / "actor", tiny_model, seed=step)
    (checkpoints / "checkpoint_tracker.json").write_text(json.dumps(
        {"best_global_step": 1, "best_val_reward_score": 0.8, "last_global_step": 2, "last_actor_path": "x"}))

    model = plan.finalize()  # what `run` records when EasyR1 exits 0
    step2 = checkpoints / "global_step_2" / "actor"
    assert model == {"base": str(tiny_model), "adapters": [str(run_dir)], "template": "qwen", "finetuning_type": "lora",
                     "stage": "grpo", "merged": False, "backend": "easyr1", "checkpoint": str(step2)}
    assert (run_dir / "adapter_model.safetensors").read_bytes() == (step2 / "lora_adapter/adapter_model.safetensors").read_bytes()
    assert (run_dir / "tokenizer_config.json").is_file()
    manifest.write(run_dir, {"recipe": {"name": "grpo-gsm8k"}, "stage": "grpo", "verb": "grpo", "stage_index": 0,
                             "config": stage.config, "status": "completed", "finished_at": manifest.now(), "model": model})

    proc = run_cli_subprocess("export", run_dir, "--checkpoint", "best", "-o", tmp_path / "merged", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    step1 = checkpoints / "global_step_1" / "actor"
    assert json.loads((run_dir / "llf-run.json").read_text())["model"]["checkpoint"] == str(step1)
    assert (run_dir / "adapter_model.safetensors").read_bytes() == (step1 / "lora_adapter/adapter_model.safetensors").read_bytes()
    merged = load_file(str(next((tmp_path / "merged").glob("*.safetensors"))))
    base = load_file(str(tiny_model / "model.safetensors"))
    key = next(k for k in base if "q_proj.weight" in k)
    assert merged[key].shape == base[key].shape and not merged[key].equal(base[key])  # the adapter is merged in
    assert json.loads((tmp_path / "merged" / "llf-run.json").read_text())["model"]["merged"] is True


def test_a_run_without_a_checkpoint_says_so(tmp_path):
    from llf_recipes.engines.easyr1.checkpoints import checkpoint_step
    from llf_recipes.errors import LlfError

    with pytest.raises(LlfError, match="saved no checkpoint"):
        checkpoint_step(tmp_path)
    (tmp_path / "checkpoint_tracker.json").write_text(json.dumps({"last_global_step": 3, "best_global_step": 0}))
    with pytest.raises(LlfError, match="has no best_global_step"):
        checkpoint_step(tmp_path, "best")
    with pytest.raises(LlfError, match="global_step_3/actor does not exist"):
        checkpoint_step(tmp_path, "latest")

"""Bundled samples converted and registered by llf-recipes, then trained on by llamafactory-cli (tiny model, CPU):
the entries LLaMA-Factory reads are right for sft, rm, ppo (on its own engine, with the rm stage's reward model), dpo
and kto."""

import json

import pytest
from conftest import run_cli_subprocess

pytestmark = pytest.mark.engine
ENV = {"DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"}
ENTRIES = ["ultrafeedback_sft", "ultrafeedback_prefs", "ultrafeedback_gen", "ultrafeedback_kto", "zhihu_sft", "zhihu_rlhf"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    for name in ENTRIES:
        proc = run_cli_subprocess("convert", name, "--sample", "--data-dir", d)
        assert proc.returncode == 0, proc.stderr
    proc = run_cli_subprocess("register", *ENTRIES, "--data-dir", d)
    assert proc.returncode == 0, proc.stderr
    return d


def cpu_run(recipe, catalog, tiny_model, data_dir, out, *extra, env=None):
    """`llf-recipes run` on CPU: tiny model, 2 steps, no 4-bit (bitsandbytes needs CUDA)."""
    from llf_recipes.hardware import default_layout
    from llf_recipes.render import Renderer

    present = {k for r in Renderer(catalog.recipe(recipe), default_layout("cpu"), catalog=catalog).render_all() for k in r.config}
    quant = [f"~{k}" for k in ("quantization_bit", "quantization_method", "quantization_type", "double_quantization") if k in present]
    sets = [f"model_name_or_path={tiny_model}", f"dataset_dir={data_dir}", "max_steps=2", "cutoff_len=96", "logging_steps=1",
            "save_steps=2", "preprocessing_num_workers=1", "per_device_eval_batch_size=1", *quant, *extra]
    if "eval_steps" in present:
        sets.append("eval_steps=2")
    argv = ["run", recipe, "--device", "cpu", "--output-root", out]
    for s in sets:
        argv += ["--set", s]
    return run_cli_subprocess(*argv, env={**ENV, **(env or {})})


def trained(stage_dir):
    state = json.loads((stage_dir / "trainer_state.json").read_text())
    return state["global_step"]


def test_rlhf_sft_rm_then_ppo_on_its_engine(catalog, tiny_model, ppo_engine, data_dir, tmp_path):
    # The ppo stage runs on the llamafactory-ppo engine (0.9.3 + trl 0.9.6), found in the cache it was installed into.
    env = {"LLF_RECIPES_CACHE": str(tiny_model.parent)}
    proc = cpu_run("rlhf-ultrafeedback", catalog, tiny_model, data_dir, tmp_path, "max_new_tokens=8", "ppo.ppo_epochs=1",
                   env=env)
    base = tmp_path / "rlhf-ultrafeedback"
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert trained(base / "sft") == 2 and trained(base / "rm") == 2 and trained(base / "ppo") == 2
    assert (base / "rm" / "value_head.safetensors").is_file()
    ppo = json.loads((base / "ppo" / "llf-run.json").read_text())
    assert str(ppo["config"]["reward_model"]).endswith("rlhf-ultrafeedback/rm") and ppo["engine"]["name"] == "llamafactory-ppo"


def test_zhihu_sft_then_dpo(catalog, tiny_model, data_dir, tmp_path):
    proc = cpu_run("zhihu", catalog, tiny_model, data_dir, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    dpo = tmp_path / "zhihu" / "dpo"
    assert trained(dpo) == 2
    log = json.loads((dpo / "trainer_state.json").read_text())["log_history"]
    assert any("rewards/chosen" in h for h in log)


def test_kto(catalog, tiny_model, data_dir, tmp_path):
    proc = cpu_run("kto-ultrafeedback", catalog, tiny_model, data_dir, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert trained(tmp_path / "kto-ultrafeedback" / "kto") == 2

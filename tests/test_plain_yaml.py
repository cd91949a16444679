"""A plain LLaMA-Factory YAML (what `llamafactory-cli train FILE` takes) goes through render, validate and run as a
one-stage recipe, and `validate FILE --set` applies what it sets."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import make_data_dir, run_cli_subprocess
from lf_example import LORA_SFT

from llf_recipes import yamlio

ZERO3 = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
         "zero_optimization": {"stage": 3}, "bf16": {"enabled": "auto"}}


@pytest.fixture
def lf_file(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lf").mkdir()
    path = tmp_path / "lf" / "lora_sft.yaml"
    path.write_text(LORA_SFT, encoding="utf-8")
    return path


def test_render_of_a_plain_yaml_keeps_every_key(cli, lf_file):
    code, out, err = cli("render", lf_file)
    assert code == 0, err
    assert yamlio.load(out) == yaml.safe_load(LORA_SFT)
    # two GPUs: its own batch sizes, and no DeepSpeed unless asked for (llamafactory-cli would run it without)
    code, out, err = cli("render", lf_file, "--gpus", "0,1")
    assert code == 0, err
    assert yamlio.load(out) == yaml.safe_load(LORA_SFT)
    code, out, err = cli("render", lf_file, "--gpus", "0,1", "--set", "deepspeed=z2", "--set", "learning_rate=1e-4")
    config = yamlio.load(out)
    assert Path(config["deepspeed"]).name == "ds_z2_config.json" and config["learning_rate"] == pytest.approx(1e-4)


def test_run_plans_a_plain_yaml_as_one_stage(cli, lf_file, tmp_path):
    (tmp_path / "ds.json").write_text(json.dumps(ZERO3), encoding="utf-8")
    lf_file.write_text(LORA_SFT.replace("ddp_timeout", "deepspeed: ds.json\nddp_timeout"), encoding="utf-8")
    code, out, err = cli("run", lf_file, "--gpus", "0,1", "--dry-run", "--json")
    assert code == (1 if any(p["input_problems"] for p in json.loads(out)) else 0), err
    (plan,) = json.loads(out)
    assert (plan["stage"], plan["verb"], plan["output_dir"]) == ("sft", "train", "saves/qwen2.5-0.5b/lora/sft")
    assert plan["files"] == ["saves/qwen2.5-0.5b/lora/sft/llf-sft.yaml", "saves/qwen2.5-0.5b/lora/sft/ds.json"]
    assert plan["config"]["deepspeed"] == "saves/qwen2.5-0.5b/lora/sft/ds.json"
    assert plan["nodes"][0]["env"]["NPROC_PER_NODE"] == "2"
    code, out, err = cli("run", lf_file, "--smoke", "--dry-run", "--json")
    assert code == (1 if any(p["input_problems"] for p in json.loads(out)) else 0), err
    assert json.loads(out)[0]["output_dir"] == "saves/smoke/lora_sft/sft"


def test_a_two_document_file_without_a_header_says_how_to_write_one(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "two.yaml").write_text(LORA_SFT + "---\n" + LORA_SFT, encoding="utf-8")
    code, _, err = cli("run", "two.yaml", "--dry-run")
    assert code != 0 and "Traceback" not in err
    assert "not a recipe header" in err and "stages: [{name: sft}]" in err


@pytest.mark.parametrize(("setting", "rule"), [
    ("learning_rate=abc", "wrong-type"), ("lerning_rate=1e-4", "unknown-key"), ("lr_scheduler_type=cosin", "invalid-choice"),
])
def test_validate_applies_set_to_a_plain_yaml(cli, lf_file, setting, rule):
    code, out, err = cli("validate", lf_file)
    assert code == 0, err
    code, out, err = cli("validate", lf_file, "--set", setting)
    assert code == 1 and f"(rule {rule})" in err and "ok:" not in out


def test_validate_set_deepspeed_picks_a_bundled_profile(cli, lf_file):
    lf_file.write_text(LORA_SFT.replace("ddp_timeout", "deepspeed: missing/ds_z3.json\nddp_timeout"), encoding="utf-8")
    code, _out, err = cli("validate", lf_file, "--gpus", "0,1")
    assert code == 1 and "(rule deepspeed-missing)" in err and "--set deepspeed=z2" in err
    code, _, err = cli("validate", lf_file, "--gpus", "0,1", "--set", "deepspeed=z2")  # the fix it gives
    assert code == 0, err
    code, _, err = cli("validate", lf_file, "--gpus", "0,1", "--set", "~deepspeed")
    assert code == 0, err


def test_validating_a_rendered_multi_gpu_file_names_its_layout(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("render", "zhihu", "--hostfile", "2node-8gpu", "--output-dir", "out")
    assert code == 0, err
    code, _out, err = cli("validate", "out/sft.yaml")
    assert code == 1 and "(rule deepspeed-needs-torchrun)" in err
    assert "rendered for 2 nodes x 8 GPUs = 16: validate it there with --hostfile 2node-8gpu" in err
    code, _, err = cli("validate", "out/sft.yaml", "--hostfile", "2node-8gpu")
    assert code == 0, err
    code, _, err = cli("render", "sft-huanhuan", "--gpus", "0,1,2,3", "--output-dir", "four")
    code, _, err = cli("validate", "four/sft.yaml")
    assert code == 1 and "validate it there with --gpus 0,1,2,3" in err


@pytest.mark.engine
def test_a_plain_yaml_smoke_run_trains_under_saves_smoke(catalog, tmp_path, tiny_model):
    data = make_data_dir(tmp_path / "data", catalog, ["huanhuan"])
    path = tmp_path / "lora_sft.yaml"
    path.write_text(LORA_SFT.replace("template: qwen", f"template: qwen\ndataset_dir: {data}"), encoding="utf-8")
    proc = run_cli_subprocess("run", path, "--smoke", cwd=tmp_path,
                              env={"DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stage_dir = tmp_path / "saves" / "smoke" / "lora_sft" / "sft"
    assert (stage_dir / "adapter_model.safetensors").is_file()
    assert json.loads((stage_dir / "llf-run.json").read_text())["status"] == "completed"
    assert not (tmp_path / "saves" / "qwen2.5-0.5b").exists()


def test_a_plain_yaml_in_recipes_is_listed_and_runs_by_name(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "my_lora_sft.yaml").write_text(LORA_SFT, encoding="utf-8")
    code, out, err = cli("list", "--json")
    assert code == 0, err
    (row,) = [r for r in json.loads(out) if r["name"] == "my_lora_sft"]
    assert row["stages"] == ["sft"] and row["datasets"] == ["huanhuan"]
    code, out, err = cli("run", "my_lora_sft", "--dry-run", "--json")
    assert code == (1 if any(p["input_problems"] for p in json.loads(out)) else 0), err
    assert json.loads(out)[0]["output_dir"] == "saves/qwen2.5-0.5b/lora/sft"


def test_show_of_a_plain_yaml_gives_its_own_fixes(cli, lf_file):
    code, out, err = cli("show", lf_file)
    assert code == 0, err
    assert "llamafactory-cli train, stage sft" in out
    assert "--set bf16=false --set fp16=true" in out and "precision=fp16" not in out

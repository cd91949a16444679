"""`render` shows the DeepSpeed config `run` writes and uses: the user's own file wins over the layout's profile, the
layout's profile is shown when the template does not write the key, and the command line beats both."""

import json
from pathlib import Path

import pytest

from llf_recipes import yamlio

ZERO3 = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
         "zero_optimization": {"stage": 3, "overlap_comm": False}, "bf16": {"enabled": "auto"}}

RECIPE = """\
description: LoRA SFT written like a LLaMA-Factory example
stages:
  - name: sft
---
### model
model_name_or_path: Qwen/Qwen2.5-0.5B-Instruct

### method
stage: sft
do_train: true
finetuning_type: lora
lora_target: all
{deepspeed}
### dataset
dataset: huanhuan
template: qwen

### output
output_dir: saves/lf/sft

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
bf16: true
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "my_z3.json").write_text(json.dumps(ZERO3), encoding="utf-8")
    (tmp_path / "recipes" / "own.yaml").write_text(RECIPE.format(deepspeed="deepspeed: ds/my_z3.json\n"), encoding="utf-8")
    (tmp_path / "recipes" / "bare.yaml").write_text(RECIPE.format(deepspeed=""), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def rendered(cli, *argv) -> dict:
    code, out, err = cli("render", *argv)
    assert code == 0, err
    return yamlio.load(out)


def planned(cli, *argv) -> tuple[dict, list[str], dict | None]:
    """The dry run's config, files, and the DeepSpeed JSON the stage would use (read from its source)."""
    code, out, err = cli("run", *argv, "--dry-run", "--json")
    assert code == (1 if any(p["input_problems"] for p in json.loads(out)) else 0), err
    (plan,) = json.loads(out)
    return plan["config"], plan["files"], plan["config"].get("deepspeed")


def test_the_users_deepspeed_file_wins_in_render_and_run(cli, project):
    assert rendered(cli, "own", "--gpus", "0,1")["deepspeed"] == "ds/my_z3.json"
    _, files, used = planned(cli, "own", "--gpus", "0,1")
    assert used == "saves/lf/sft/my_z3.json" and used in files
    assert not any("ds_z2" in f for f in files)
    # what run writes there is the user's file
    code, _, err = cli("render", "own", "--gpus", "0,1", "--output-dir", "out")
    assert code == 0, err
    assert json.loads((project / "out" / "my_z3.json").read_text())["zero_optimization"]["stage"] == 3
    assert yamlio.load((project / "out" / "sft.yaml").read_text())["deepspeed"] == "out/my_z3.json"
    assert not (project / "out" / "ds_z2_config.json").exists()


def test_the_layouts_profile_is_shown_by_render_when_run_adds_it(cli, project):
    shown = rendered(cli, "bare", "--gpus", "0,1")["deepspeed"]
    assert Path(shown).name == "ds_z2_config.json"
    _, files, used = planned(cli, "bare", "--gpus", "0,1")
    assert Path(used).name == "ds_z2_config.json" and used in files
    # one device: neither has one
    assert "deepspeed" not in rendered(cli, "bare")
    assert planned(cli, "bare")[2] is None


def test_the_command_line_beats_the_files_deepspeed(cli, project):
    assert Path(rendered(cli, "own", "--gpus", "0,1", "--set", "deepspeed=z2")["deepspeed"]).name == "ds_z2_config.json"
    assert "deepspeed" not in rendered(cli, "own", "--gpus", "0,1", "--set", "deepspeed=none")
    assert "deepspeed" not in rendered(cli, "bare", "--gpus", "0,1", "--set", "~deepspeed")
    _, files, used = planned(cli, "bare", "--gpus", "0,1", "--set", "~deepspeed")
    assert used is None and len(files) == 1


def test_bundled_recipes_keep_their_layout_profiles(cli):
    one_node = yamlio.load(cli("render", "sft-huanhuan", "--gpus", "0,1")[1])
    assert Path(one_node["deepspeed"]).name == "ds_z2_config.json"
    two_nodes = yamlio.load(cli("render", "sft-huanhuan", "--hostfile", "2node-8gpu")[1])
    assert Path(two_nodes["deepspeed"]).name == "ds_z3_config.json"

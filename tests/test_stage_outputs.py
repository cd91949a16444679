"""Where stages write: a smoke run stays under its own root, an empty root is refused, no two stages share a folder,
and per-stage variables (`--set STAGE.NAME=VALUE`)."""

import json
from pathlib import Path

import pytest
from lf_example import LORA_SFT

from llf_recipes import yamlio

# A recipe written like LLaMA-Factory's LoRA SFT example: a fixed output_dir, no Jinja at all.
FIXED_OUTPUT = """\
description: LoRA SFT with a fixed output folder
stages:
  - name: sft
---
""" + LORA_SFT.replace("output_dir: saves/qwen2.5-0.5b/lora/sft", "output_dir: real/qwen/lora/sft")

# The same, then a DPO stage that names the SFT folder literally rather than by stage_output().
TWO_FIXED = FIXED_OUTPUT.replace("  - name: sft\n", "  - name: sft\n  - name: dpo\n") + """---
### model
model_name_or_path: Qwen/Qwen2.5-0.5B-Instruct
adapter_name_or_path: real/qwen/lora/sft
ref_model: real/qwen/lora/sft/merged
### method
stage: dpo
do_train: true
finetuning_type: lora
### dataset
dataset: zhihu_rlhf
template: qwen
### output
output_dir: real/qwen/lora/dpo
"""


def project(tmp_path: Path, monkeypatch, **recipes: str) -> Path:
    (tmp_path / "recipes").mkdir()
    for name, text in recipes.items():
        (tmp_path / "recipes" / f"{name}.yaml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def dry_run(cli, *argv) -> list[dict]:
    code, out, err = cli("run", *argv, "--dry-run", "--json")
    assert code == (1 if any(p["input_problems"] for p in json.loads(out)) else 0), err
    return json.loads(out)


def test_a_smoke_run_never_writes_into_a_fixed_output_dir(cli, tmp_path, monkeypatch):
    project(tmp_path, monkeypatch, fixed=FIXED_OUTPUT)
    code, out, err = cli("run", "fixed", "--smoke", "--dry-run", "--json")
    assert code == (1 if any(p["input_problems"] for p in json.loads(out)) else 0), err
    (plan,) = json.loads(out)
    assert plan["output_dir"] == "saves/smoke/fixed/sft"
    assert all(f.startswith("saves/smoke/fixed/sft/") for f in plan["files"])
    assert plan["config"]["output_dir"] == "saves/smoke/fixed/sft"
    assert "stage sft writes to saves/smoke/fixed/sft, not its own output_dir real/qwen/lora/sft" in err
    # without --smoke the recipe's own folder is kept
    assert dry_run(cli, "fixed")[0]["output_dir"] == "real/qwen/lora/sft"


def test_a_smoke_run_moves_a_later_stages_literal_reference_too(cli, tmp_path, monkeypatch):
    project(tmp_path, monkeypatch, two=TWO_FIXED)
    sft, dpo = dry_run(cli, "two", "--smoke", "--output-root", "trial")
    assert (sft["output_dir"], dpo["output_dir"]) == ("trial/two/sft", "trial/two/dpo")
    assert dpo["config"]["adapter_name_or_path"] == "trial/two/sft"
    assert dpo["config"]["ref_model"] == "trial/two/sft/merged"
    assert not (tmp_path / "real").exists()


@pytest.mark.parametrize("argv", [["--set", "output_root="], ["--set", "output_root=  "], ["--output-root", ""]])
def test_an_empty_output_root_is_refused(cli, argv):
    code, out, err = cli("run", "sft-huanhuan", "--smoke", "--dry-run", *argv)
    assert code != 0 and out == ""
    assert "output_root is empty" in err and "Traceback" not in err
    if argv[0] == "--set":
        code, out, err = cli("render", "sft-huanhuan", *argv)
        assert code != 0 and "output_root is empty" in err and "/sft-huanhuan/sft" not in out


def test_two_stages_sharing_one_output_dir_are_refused(cli):
    code, out, err = cli("validate", "zhihu", "--set", "output_dir=saves/real")
    assert code != 0 and "all valid" not in out
    assert "stages 'sft' and 'dpo' both write to saves/real" in err
    assert "--set dpo.output_dir=DIR" in err
    code, _, err = cli("run", "zhihu", "--dry-run", "--set", "output_dir=saves/real")
    assert code != 0 and "both write to saves/real" in err
    # one stage's own folder is fine
    code, _, err = cli("validate", "zhihu", "--set", "dpo.output_dir=saves/real")
    assert code == 0, err


def _batch(yaml_text: str) -> list[tuple[int, int]]:
    docs = [yamlio.load(d) for d in yaml_text.split("\n---\n")]
    return [(d["per_device_train_batch_size"], d["gradient_accumulation_steps"]) for d in docs]


@pytest.mark.parametrize(("setting", "expected_dpo"), [
    ("dpo.micro_batch_size=1", (1, 16)),
    ("dpo.global_batch_size=8", (2, 4)),  # zhihu's dpo stage sets micro_batch_size 2 in its header
])
def test_stage_scoped_recipe_variables(cli, setting, expected_dpo):
    code, base, err = cli("render", "zhihu", "--no-validate")
    assert code == 0, err
    code, out, err = cli("render", "zhihu", "--set", setting)
    assert code == 0, err
    sft_before, _ = _batch(base)
    sft, dpo = _batch(out)
    assert dpo == expected_dpo and sft == sft_before  # the other stage keeps its own


def test_a_stage_scoped_deepspeed_variable_picks_that_stages_profile(cli):
    code, out, err = cli("render", "zhihu", "--gpus", "0,1", "--set", "dpo.deepspeed=z3")
    assert code == 0, err
    sft, dpo = (yamlio.load(d) for d in out.split("\n---\n"))
    assert sft["deepspeed"].endswith("ds_z2_config.json") and dpo["deepspeed"].endswith("ds_z3_config.json")

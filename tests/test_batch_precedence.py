"""A batch size typed on the command line is the one the config holds: `--set STAGE.KEY`, then `--set KEY`, then the
stage's own size in the recipe header, then the recipe's variable."""

import pytest
from lf_example import LORA_SFT

from llf_recipes import yamlio

HEADER = """description: two stages, the second with its own batch sizes
vars:
  global_batch_size: 16
  micro_batch_size: 4
stages:
  - name: sft
  - name: dpo
    global_batch_size: 8
    micro_batch_size: 1
"""
STAGE = LORA_SFT.replace("per_device_train_batch_size: 2", "per_device_train_batch_size: {{ per_device_train_batch_size }}"
                         ).replace("gradient_accumulation_steps: 4",
                                   "gradient_accumulation_steps: {{ gradient_accumulation_steps }}")
RECIPE = HEADER + "---\n" + STAGE.replace("lora/sft", "lora/a") + "---\n" + STAGE.replace("lora/sft", "lora/b")


@pytest.mark.parametrize(("sets", "expected"), [
    ([], (1, 2)),  # the header's 8 = 1 x 2 x 4 devices
    (["micro_batch_size=2"], (2, 1)),  # typed for every stage: beats the header
    (["global_batch_size=32"], (1, 8)),
    (["micro_batch_size=2", "dpo.micro_batch_size=1"], (1, 2)),  # typed for the stage: beats the unscoped one
    (["dpo.global_batch_size=16", "global_batch_size=64"], (1, 4)),
])
def test_the_size_typed_is_the_size_rendered(cli, tmp_path, sets, expected):
    path = tmp_path / "two.yaml"
    path.write_text(RECIPE, encoding="utf-8")
    args = [a for s in sets for a in ("--set", s)]
    code, out, err = cli("render", path, "--stage", "dpo", "--gpus", "0-3", *args)
    assert code == 0, err
    config = yamlio.load(out)
    assert (config["per_device_train_batch_size"], config["gradient_accumulation_steps"]) == expected


def test_a_zero_in_the_header_is_refused_not_replaced(cli, tmp_path):
    path = tmp_path / "zero.yaml"
    path.write_text(RECIPE.replace("micro_batch_size: 1", "micro_batch_size: 0"), encoding="utf-8")
    code, _, err = cli("render", path, "--stage", "dpo")
    assert code != 0 and "micro_batch_size must be a positive whole number, not 0" in err


def test_a_bundled_stage_s_own_size_yields_to_the_command_line(cli):
    code, out, err = cli("render", "rlhf-ultrafeedback", "--stage", "ppo", "--set", "micro_batch_size=4", "--gpus", "0-3")
    assert code == 0, err
    assert yamlio.load(out)["per_device_train_batch_size"] == 4

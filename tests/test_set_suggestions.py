"""A misspelt `--set` name is matched against the recipe's variables as well as LLaMA-Factory's arguments."""

import pytest


@pytest.mark.parametrize(("recipe", "setting", "suggestion"), [
    ("zhihu", "precison=fp16", "--set precision=...? (a variable of recipe zhihu)"),
    ("zhihu", "micro_bach_size=2", "--set micro_batch_size=...? (a variable of recipe zhihu)"),
    ("zhihu", "dpo.micro_bach_size=2", "--set dpo.micro_batch_size=...? (a variable of recipe zhihu)"),
    ("sft-huanhuan-mixed", "general_shar=0.5", "--set general_share=...? (a variable of recipe sft-huanhuan-mixed)"),
    ("zhihu", "lerning_rate=1e-4", "--set learning_rate=...?"),
])
def test_a_misspelt_set_name_gets_the_nearest_variable_or_argument(cli, recipe, setting, suggestion):
    code, out, err = cli("render", recipe, "--set", setting)
    assert code == 1 and out == ""
    name = setting.split("=")[0].split(".")[-1]
    assert f"{name}: is not a LLaMA-Factory 0.9.5 `train` argument, nor a variable of recipe {recipe} (--set)" in err
    assert f"did you mean {suggestion}" in err
    assert "hub_revision" not in err and "auto_find_batch_size" not in err


def test_a_name_near_nothing_lists_the_recipes_variables(cli):
    code, _, err = cli("validate", "zhihu", "--set", "zzzqqq=1")
    assert code == 1
    assert "drop --set zzzqqq; the recipe's variables are " in err and "micro_batch_size" in err


def test_a_real_argument_set_on_the_command_line_still_validates(cli):
    code, _, err = cli("validate", "zhihu", "--set", "learning_rate=5e-6", "--set", "dpo.micro_batch_size=1")
    assert code == 0, err

"""`validate FILE` sees a plain LLaMA-Factory config as `render FILE` and `run FILE` do: the same rendering of its
`--set` values, and the same answer to what a plain file is."""

import json
from pathlib import Path

import pytest
import yaml
from lf_example import LORA_SFT

from llf_recipes import yamlio


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FORCE_TORCHRUN", raising=False)
    return tmp_path


def test_set_deepspeed_auto_keeps_the_file_s_own_in_validate_as_in_render(cli, project):
    path = project / "sft.yaml"
    path.write_text(LORA_SFT.replace("ddp_timeout", "deepspeed: missing/ds_z3.json\nddp_timeout"), encoding="utf-8")
    # `auto` is the layout's choice only where the file has none: both keep (and report) the file's missing one
    code, _, err = cli("render", path, "--gpus", "0,1", "--set", "deepspeed=auto")
    assert code != 0 and "(rule deepspeed-missing)" in err and "missing/ds_z3.json" in err
    code, _, err = cli("validate", path, "--gpus", "0,1", "--set", "deepspeed=auto")
    assert code == 1 and "(rule deepspeed-missing)" in err and "missing/ds_z3.json" in err
    code, out, err = cli("render", path, "--gpus", "0,1", "--set", "deepspeed=z2")
    assert code == 0 and Path(yamlio.load(out)["deepspeed"]).name == "ds_z2_config.json", err
    code, _, err = cli("validate", path, "--gpus", "0,1", "--set", "deepspeed=z2")
    assert code == 0, err


def test_a_plain_file_mentioning_stages_is_still_validated_as_llamafactory_cli_runs_it(cli, project):
    path = project / "sft.yaml"
    path.write_text("# stages: one, as llamafactory-cli runs it\n"
                    + LORA_SFT.replace("ddp_timeout", "deepspeed: ds.json\nddp_timeout"), encoding="utf-8")
    (project / "ds.json").write_text('{"train_batch_size": "auto", "zero_optimization": {"stage": 2}}', encoding="utf-8")
    code, out, err = cli("validate", path)  # one process started by llamafactory-cli: no torchrun for DeepSpeed
    assert code == 1 and "(rule deepspeed-needs-torchrun)" in err and "ok:" not in out


def test_a_json_config_renders_as_it_validates(cli, project):
    path = project / "sft.json"
    path.write_text(json.dumps(yaml.safe_load(LORA_SFT)), encoding="utf-8")
    code, out, err = cli("validate", path)
    assert code == 0 and "ok:" in out, err
    code, out, err = cli("render", path)
    assert code == 0, err
    assert yamlio.load(out) == yaml.safe_load(LORA_SFT)


def test_a_stage_s_own_deepspeed_auto_defers_to_the_file_over_an_unscoped_choice(cli, project):
    path = project / "sft.yaml"
    path.write_text(LORA_SFT.replace("ddp_timeout", "deepspeed: own.json\nddp_timeout"), encoding="utf-8")
    (project / "own.json").write_text('{"train_batch_size": "auto", "zero_optimization": {"stage": 1}}',
                                      encoding="utf-8")
    code, out, err = cli("render", path, "--gpus", "0,1", "--set", "deepspeed=z3", "--set", "sft.deepspeed=auto")
    assert code == 0, err
    assert yamlio.load(out)["deepspeed"] == "own.json"
    code, out, err = cli("render", path, "--gpus", "0,1", "--set", "deepspeed=z3")
    assert code == 0 and Path(yamlio.load(out)["deepspeed"]).name == "ds_z3_config.json", err

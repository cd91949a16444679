"""A finding names the `--set` recipe variable its value was rendered from only when the user typed it, and only when
rendering the stage as it was rendered (its --set keys, scopes and smoke root included) without it changes the value."""

import pytest
from lf_example import LORA_SFT

OUTPUT = "output_dir: saves/qwen2.5-0.5b/lora/sft"


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_smoke_run_s_own_output_root_is_not_blamed_on_a_set(cli, project):
    (project / "ow.yaml").write_text("description: one stage\nstages:\n  - name: sft\n---\n"
                                     + LORA_SFT.replace(OUTPUT, "output_dir: {{ output_dir }}").replace(
                                         "overwrite_output_dir: true\n", ""), encoding="utf-8")
    (project / "saves/smoke/ow/sft").mkdir(parents=True)
    (project / "saves/smoke/ow/sft/adapter_model.safetensors").write_bytes(b"x")
    code, _, err = cli("run", "ow.yaml", "--smoke", "--dry-run")
    assert code != 0 and "(rule output-dir-not-empty)" in err and "Traceback" not in err
    assert "from --set" not in err and "it is rendered from" not in err
    # typed by the user, it is named
    (project / "other/ow/sft").mkdir(parents=True)
    (project / "other/ow/sft/adapter_model.safetensors").write_bytes(b"x")
    code, _, err = cli("run", "ow.yaml", "--smoke", "--dry-run", "--set", "output_root=other")
    assert code != 0 and "(from --set output_root=other)" in err


def test_a_value_set_directly_upstream_is_not_blamed_on_a_variable(cli, project):
    second = LORA_SFT.replace("finetuning_type: lora", "finetuning_type: full").replace(
        OUTPUT, "output_dir: {{ output_dir }}\nadapter_name_or_path: {{ stage_output('a') }}")
    (project / "two.yaml").write_text(
        "description: two stages\nstages:\n  - name: a\n  - name: b\n---\n"
        + LORA_SFT.replace(OUTPUT, "output_dir: {{ output_dir }}") + "---\n" + second, encoding="utf-8")
    code, _, err = cli("validate", "two.yaml", "--set", "output_root=saves/x")
    assert code == 1 and "adapters are only loaded for finetuning_type lora" in err
    assert "(from --set output_root=saves/x)" in err  # b reads a's directory, which output_root decides
    # a's directory typed directly (to the same place): output_root no longer decides what b reads
    code, _, err = cli("validate", "two.yaml", "--set", "output_root=saves/x", "--set", "a.output_dir=saves/x/two/a")
    assert code == 1 and "adapters are only loaded for finetuning_type lora" in err
    assert "from --set" not in err


def test_a_variable_set_for_one_stage_is_named_with_its_stage(cli):
    code, out, err = cli("validate", "sft-huanhuan-mixed", "--set", "sft.general_share=1.5")
    assert code != 0 and "has a negative weight" in out + err
    assert "(from --set sft.general_share=1.5)" in out + err

"""A file that is neither a valid plain LLaMA-Factory config nor a recipe is reported for what it is: a YAML syntax
error with its line, or a recipe header without stages, the same way by render, validate and list."""

import pytest


@pytest.fixture
def rd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rd").mkdir()
    (tmp_path / "rd" / "badyaml.yaml").write_text("model_name_or_path: m\nstage: : sft\ndo_train: true\n", encoding="utf-8")
    (tmp_path / "rd" / "justheader.yaml").write_text("description: x\n", encoding="utf-8")
    return tmp_path / "rd"


@pytest.mark.parametrize("verb", [["render"], ["validate"], ["run", "--dry-run"]])
def test_a_yaml_syntax_error_names_its_line(cli, rd, verb):
    code, _out, err = cli(verb[0], "rd/badyaml.yaml", *verb[1:])
    assert code != 0 and "Traceback" not in err
    assert "rd/badyaml.yaml:2: invalid YAML" in err and "header document" not in err


@pytest.mark.parametrize("verb", [["render"], ["validate"], ["run", "--dry-run"]])
def test_a_header_without_stages_is_a_recipe_not_a_chat_config(cli, rd, verb):
    code, out, err = cli(verb[0], "rd/justheader.yaml", *verb[1:])
    assert code != 0 and "Traceback" not in err
    assert "a recipe needs a header document and at least one stage" in err and "chat" not in err + out


def test_list_and_validate_all_report_both_files(cli, rd):
    code, out, err = cli("list", "--recipe-dir", rd)
    assert "badyaml.yaml:2: invalid YAML" in err
    assert "justheader.yaml: a recipe needs a header document" in err and "justheader" not in out
    code, out, err = cli("validate", "--all", "--recipe-dir", rd)
    assert code == 1
    assert "badyaml.yaml:2: invalid YAML" in err and "justheader.yaml: a recipe needs a header document" in err
    assert "chat argument" not in err

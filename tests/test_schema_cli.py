"""`llf-recipes schema`: the JSON Schema editors use accepts every bundled recipe's rendered stages and our corpus of
valid configs, and rejects a misspelt key, a wrong type and a value outside a key's choices (checked with the
jsonschema library, as yaml-language-server would)."""

import json
from pathlib import Path

import jsonschema
import pytest

from llf_recipes import yamlio
from llf_recipes.hardware import parse_hostfile
from llf_recipes.render import Renderer

CORPUS = Path(__file__).parent / "lf_corpus"


@pytest.fixture(scope="module")
def schemas(tmp_path_factory):
    from llf_recipes.cli import main

    out = {}
    for verb in ("train", "chat", "export"):
        path = tmp_path_factory.mktemp("schema") / f"{verb}.json"
        assert main(["schema", "--verb", verb, "-o", str(path)]) == 0
        schema = json.loads(path.read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        out[verb] = jsonschema.Draft7Validator(schema)
    return out


def _errors(validator, config):
    return sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))


def test_every_rendered_recipe_stage_validates(schemas, catalog):
    checked = 0
    for recipe in catalog.recipes():
        for hostfile in catalog.hostfile_paths.values():
            for r in Renderer(recipe, parse_hostfile(hostfile), catalog=catalog).render_all():
                if r.verb == "grpo" or r.engine == "llf":  # EasyR1/TRL settings; llf-recipes' own verbs
                    continue
                errors = _errors(schemas["train" if r.verb == "train" else "chat"], r.config)
                assert not errors, f"{recipe.name}/{r.stage.name}: {[e.message for e in errors]}"
                checked += 1
    assert checked >= 39


def test_corpus_configs_that_llamafactory_accepts_validate(schemas):
    for path in sorted(CORPUS.glob("*.yaml")):
        text = path.read_text()
        if "# expect: accept" not in text:
            continue
        verb = "train" if "# llamafactory-cli: train" in text else "chat"
        assert not _errors(schemas[verb], yamlio.load(text)), path.name


@pytest.mark.parametrize("config, where", [
    ({"model_name_or_path": "m", "lerning_rate": 1e-4}, "lerning_rate"),
    ({"model_name_or_path": "m", "learning_rate": "fast"}, "learning_rate"),
    ({"model_name_or_path": "m", "stage": "grpo"}, "stage"),
    ({"model_name_or_path": "m", "report_to": ["wandb", "tensorbord"]}, "report_to"),
    ({"model_name_or_path": "m", "lora_rank": 8.5}, "lora_rank"),
])
def test_mistakes_are_rejected(schemas, config, where):
    errors = _errors(schemas["train"], config)
    assert errors and where in json.dumps([list(e.absolute_path) + [e.message] for e in errors])


def test_lists_and_training_keys(schemas):
    assert not _errors(schemas["train"], {"dataset": ["a", "b"], "lora_target": ["q_proj", "v_proj"], "report_to": "none"})
    assert _errors(schemas["chat"], {"model_name_or_path": "m", "learning_rate": 1e-4})
    assert not _errors(schemas["export"], {"model_name_or_path": "m", "export_dir": "out", "export_size": 5})


def test_help_text_and_defaults_are_carried():
    from llf_recipes.schema.jsonschema import build_schema

    prop = build_schema("train")["properties"]["lora_target"]
    assert "LoRA" in prop["description"] and prop["default"] == "all"


def test_unwritable_output_is_a_one_line_error(cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    code, out, err = cli("schema", "-o", tmp_path / "afile" / "schema.json")
    assert code == 2 and "cannot write the schema" in err and "Traceback" not in err and not out


def test_a_missing_output_folder_is_not_created(cli, tmp_path):
    code, out, err = cli("schema", "-o", tmp_path / "nosuch" / "deeper" / "schema.json")
    assert code == 2 and f"the folder {tmp_path / 'nosuch' / 'deeper'} does not exist" in err and not out, err
    assert not (tmp_path / "nosuch").exists()
    code, out, _ = cli("schema", "-o", tmp_path / "schema.json")
    assert code == 0 and json.loads((tmp_path / "schema.json").read_text())["properties"]

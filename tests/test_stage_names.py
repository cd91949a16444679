"""A stage name is the STAGE of `--set STAGE.KEY=VALUE` and a directory: one that `--set` could not target, or that
would reach outside the recipe's directory, is refused where the recipe names it."""

import pytest

from llf_recipes.render import Overrides

STAGE = "model_name_or_path: m\nstage: sft\ndo_train: true\n"


@pytest.mark.parametrize("name", ["v1.5", "a/b", "..", "x\\\\y", "' '"])
def test_a_stage_name_set_cannot_target_is_refused_with_its_file(cli, tmp_path, name):
    path = tmp_path / "odd.yaml"
    path.write_text(f"description: x\nstages:\n  - name: {name}\n---\n{STAGE}", encoding="utf-8")
    code, _out, err = cli("render", path)
    assert code != 0 and "Traceback" not in err
    assert f"{path}:1: stage name" in err and "may not be empty or contain" in err


def test_a_plain_stage_name_is_targeted_by_set(catalog, tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(f"description: x\nstages:\n  - name: v1_5\n---\n{STAGE}", encoding="utf-8")
    recipe = catalog.recipe(str(path))
    assert Overrides.parse(["v1_5.learning_rate=1e-4"], recipe).keys == {"v1_5": {"learning_rate": 1e-4}}

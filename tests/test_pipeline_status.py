"""How a stage's end is recorded, whatever launcher ran it."""

from __future__ import annotations

import json


def test_a_stage_stopped_by_sigterm_on_many_nodes_is_recorded_interrupted(tmp_path, monkeypatch, catalog, capsys):
    """A multi-node launcher reports SIGTERM as 143 (a single node's Ctrl-C or SIGTERM as 130): both were stopped."""
    from llf_recipes.hardware import parse_hostfile_text
    from llf_recipes.launch import plan_stage
    from llf_recipes.pipeline import run_stage
    from llf_recipes.render import Overrides, Renderer

    monkeypatch.chdir(tmp_path)
    recipe = catalog.recipe("sft-huanhuan")
    layout = parse_hostfile_text("node1 slots=1\nnode2 slots=1\n", "2node")
    overrides = Overrides.parse([f"output_root={tmp_path / 'saves'}", "deepspeed=none"], recipe)
    plan = plan_stage(Renderer(recipe, layout, overrides, catalog).render("sft"))
    seen = []

    def terminated_launcher(p, log):  # what launchers/jobs.py returns when SIGTERM stops every node
        seen.append(p.stage)
        return 143

    assert run_stage(plan, terminated_launcher, force=False, position="[1/1]", layout_source="2node") == 143
    data = json.loads((plan.config_path.parent / "llf-run.json").read_text())
    assert seen == ["sft"] and data["status"] == "interrupted" and data["exit_code"] == 143
    assert "stage sft was interrupted" in capsys.readouterr().err


def test_only_stages_that_read_datasets_by_name_have_them_checked_by_the_pipeline(tmp_path, monkeypatch, catalog):
    """A LLaMA-Factory stage's datasets must be registered in its dataset_dir; a GRPO stage's engine reads its own
    converted rows (checked when its plan writes them), so an empty dataset_dir does not stop it here."""
    import pytest

    from llf_recipes.engines import stages
    from llf_recipes.errors import LlfError
    from llf_recipes.hardware import cpu_layout
    from llf_recipes.pipeline import check_registered
    from llf_recipes.render import Overrides, Renderer

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    planned = {}
    for name, stage in (("grpo-gsm8k", "grpo"), ("sft-huanhuan", "sft")):
        recipe = catalog.recipe(name)
        overrides = Overrides.parse([f"output_root={tmp_path / 'saves'}", f"dataset_dir={tmp_path / 'empty'}",
                                     "deepspeed=none"], recipe)
        planned[stage], _ = stages.plan(Renderer(recipe, cpu_layout(), overrides, catalog).render(stage), catalog,
                                        backend="trl")
    assert planned["grpo"].checks_own_data and not planned["sft"].checks_own_data
    assert check_registered(planned["grpo"]) is True
    with pytest.raises(LlfError, match="reads dataset 'huanhuan', which is not registered"):
        check_registered(planned["sft"])

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

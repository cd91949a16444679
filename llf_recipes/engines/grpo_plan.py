"""Plan a GRPO stage: its settings checked, its engine chosen (TRL on one node, EasyR1 across nodes, or the one the
stage or --backend names), then that engine's plan (engines/trl/plan.py, engines/easyr1/plan.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llf_recipes.engines.easyr1 import plan as easyr1_plan
from llf_recipes.engines.grpo_stage import GrpoPlan, dataset_file
from llf_recipes.engines.trl import plan as trl_plan
from llf_recipes.errors import LlfError
from llf_recipes.grpo import settings as grpo_settings
from llf_recipes.render import RenderedStage
from llf_recipes.schema.rules import Finding

# Each engine's plan module: engine(settings, overrides) -> its environment, layout_problem(layout) -> (what, fix) or
# None, plan(...) -> (GrpoPlan, findings), and DRIVER (what it does with a plan).
PLANNERS = {"trl": trl_plan, "easyr1": easyr1_plan}


def choose_backend(requested: str | None, settings: dict[str, Any], layout) -> str:
    """--backend, else the stage's `backend` key, else trl on one node and easyr1 across nodes."""
    backend = requested or settings.get("backend") or "auto"
    if backend == "auto":
        return "easyr1" if layout.nnodes > 1 else "trl"
    if backend not in grpo_settings.BACKENDS:
        raise LlfError(f"backend {backend!r} is unknown", key="backend", fix="use --backend trl or --backend easyr1")
    return backend


def plan_grpo(rendered: RenderedStage, catalog, backend: str | None = None,
              engines: dict[str, str] | None = None) -> tuple[GrpoPlan, list[Finding]]:
    stage = f"{rendered.recipe.name}/{rendered.stage.name}"
    findings = grpo_settings.check_keys(rendered.config, stage)
    if any(f.severity == "error" for f in findings):
        return _unplanned(rendered, backend), findings
    s = grpo_settings.resolved(rendered.config)
    base = Path.cwd()
    findings += grpo_settings.check_rewards(s["rewards"], stage, base)
    layout = rendered.layout
    chosen = choose_backend(backend, s, layout)
    s["backend"] = chosen
    rendered.engine = chosen  # the backends are engines of the same name
    data, data_findings = dataset_file(s["dataset"], s["dataset_dir"], catalog, stage)
    findings += data_findings
    planner = PLANNERS[chosen]
    problem = planner.layout_problem(layout)
    if problem is not None:
        findings.append(Finding("grpo-backend-layout", "backend", problem[0], problem[1], stage))
        return _unplanned(rendered, chosen), findings
    batch = grpo_settings.batch_for(s, layout.world_size, where=stage)
    plan, more = planner.plan(rendered, s, batch, data, base, stage, planner.engine(s, engines))
    return plan, findings + more


SMOKE_SETTINGS = {"backend": "trl", "rollout_batch_size": 4, "global_batch_size": 4, "micro_batch_size": 4,
                  "num_generations": 2, "max_steps": 2, "max_prompt_length": 256, "max_completion_length": 16,
                  "save_steps": 2, "logging_steps": 1, "bf16": False, "fp16": False, "report_to": "none"}


def smoke_settings(rendered: RenderedStage, user_keys=None) -> None:
    """`run --smoke`: two TRL steps on CPU with small groups; the recipe's data, rewards and wiring stay, and keys the
    user set with --set win."""
    user_keys = user_keys or {}
    mine = {**user_keys.get(None, {}), **user_keys.get(rendered.stage.name, {})}
    rendered.config.update(SMOKE_SETTINGS)
    rendered.config.update({k: v for k, v in mine.items() if k in grpo_settings.KEYS})


def _unplanned(rendered: RenderedStage, backend: str | None) -> GrpoPlan:
    path = Path(rendered.output_dir or ".") / f"llf-{rendered.stage.name}.yaml"
    chosen = backend or "trl"
    return GrpoPlan(rendered, path, (path,), False, (), chosen, dict(rendered.config), None,
                    PLANNERS.get(chosen, trl_plan).DRIVER)

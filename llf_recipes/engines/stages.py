"""Check and plan a rendered stage with its engine, the one place the program asks which planner an engine has.

A LLaMA-Factory engine's stage is validated against its argument snapshot and rules (validation.py) and planned as
`llamafactory-cli` per node (launch.plan_stage); a GRPO engine's stage (TRL, EasyR1) is checked and planned by its
own code (grpo_plan.py), whose findings include its engine's config checks; a stage of llf-recipes' own verbs
(generate, score, judge, pairs) by the llf engine (llf.py), which checks its keys against the verb's options.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llf_recipes import engines
from llf_recipes.provenance import name_variables
from llf_recipes.render import RenderedStage
from llf_recipes.schema.rules import Finding


def _allowed(findings: list[Finding], allow) -> list[Finding]:
    return [replace(f, severity="warning") if f.rule in allow else f for f in findings]


def check(rendered: RenderedStage, catalog, allow=frozenset(), backend: str | None = None) -> list[Finding]:
    """What is wrong with the stage, before anything runs: the findings of its engine's planner, each naming the
    --set recipe variable its value was rendered from."""
    return name_variables(rendered, _check(rendered, catalog, allow, backend), catalog)


def _check(rendered: RenderedStage, catalog, allow, backend: str | None) -> list[Finding]:
    if engines.get(rendered.engine).planner == "llf":
        from llf_recipes.engines import llf

        return _allowed(llf.findings(rendered), allow)
    if engines.get(rendered.engine).planner == "grpo":
        from llf_recipes.engines.grpo_plan import plan_grpo

        return _allowed(plan_grpo(rendered, catalog, backend)[1], allow)
    from llf_recipes.validation import validate_stage

    return validate_stage(rendered, catalog, set(allow))


def plan(rendered: RenderedStage, catalog, *, allow=frozenset(), backend: str | None = None,
         overrides: dict[str, str] | None = None, nccl: str | None = None, smoke: Any = None) -> tuple[Any, list[Finding]]:
    """(the stage's plan, its findings). `overrides`: --engine NAME=PYTHON; `smoke`: the user's --set keys of a
    `run --smoke`, whose GRPO stages get two TRL steps and whose llf stages a few short answers."""
    found_plan, findings = _plan(rendered, catalog, allow=allow, backend=backend, overrides=overrides, nccl=nccl,
                                 smoke=smoke)
    return found_plan, name_variables(rendered, findings, catalog)


def _plan(rendered: RenderedStage, catalog, *, allow, backend, overrides, nccl, smoke) -> tuple[Any, list[Finding]]:
    if engines.get(rendered.engine).planner == "llf":
        from llf_recipes.engines import llf

        if smoke is not None:
            llf.smoke(rendered, smoke.get(rendered.stage.name, {}))
        found_plan, findings = llf.plan(rendered, overrides)
        return found_plan, _allowed(findings, allow)
    if engines.get(rendered.engine).planner == "grpo":
        from llf_recipes.engines.grpo_plan import plan_grpo, smoke_settings

        if smoke is not None:
            smoke_settings(rendered, smoke)
        found_plan, findings = plan_grpo(rendered, catalog, "trl" if smoke is not None else backend, overrides)
        return found_plan, _allowed(findings, allow)
    from llf_recipes.engines.env import resolve as resolve_engine
    from llf_recipes.launch import plan_stage
    from llf_recipes.validation import validate_stage

    findings = validate_stage(rendered, catalog, set(allow))
    return plan_stage(rendered, nccl=nccl, engine=resolve_engine(rendered.engine, overrides)), findings

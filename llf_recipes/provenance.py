"""Which `--set` recipe variable a finding's value comes from.

A finding names a config key (`interleave_probs`), but the user typed a recipe variable (`--set general_share=1.5`)
that the recipe's template turned into that key. A variable is named when rendering the stage with the recipe's own
value for it changes the key's value; only findings on keys the user did not set directly are traced.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llf_recipes.errors import LlfError
from llf_recipes.render import Overrides, RenderedStage, Renderer
from llf_recipes.schema.findings import Finding

_MISSING = object()


def name_variables(rendered: RenderedStage, findings: list[Finding], catalog) -> list[Finding]:
    """`findings` with "(from --set VAR=VALUE)" added to those whose key a --set variable of the stage produced.
    Only the variables the user typed are traced (not those the command sets itself, such as a smoke run's
    output_root), each by rendering the stage once more with everything else it was rendered with."""
    recipe, name = rendered.recipe, rendered.stage.name
    overrides = rendered.overrides
    typed = {**{k: v for k, v in overrides.vars.items() if overrides.implied.get(k, _MISSING) != v},
             **overrides.stage_vars.get(name, {})}
    changed = {k: v for k, v in typed.items() if k in recipe.vars and recipe.vars[k] != v}
    keys = {f.key for f in findings if "(from --set " not in f.message} - rendered.set_keys  # set directly
    if not changed or not keys:
        return findings
    base = _config(rendered, overrides, catalog)
    if base is None:
        return findings
    sources: dict[str, list[str]] = {}
    for var, value in changed.items():
        without = _config(rendered, _without(overrides, var, name), catalog)
        for key in keys:
            if without is not None and without.get(key, _MISSING) != base.get(key, _MISSING):
                scope = f"{name}." if var in overrides.stage_vars.get(name, {}) else ""
                sources.setdefault(key, []).append(f"{scope}{var}={_show(value)}")
    return [replace(f, message=f"{f.message} (from --set {', --set '.join(sources[f.key])})",
                    fix=f"{f.fix}; it is rendered from {', '.join(s.split('=')[0].split('.')[-1] for s in sources[f.key])}: "
                        f"change that value")
            if f.key in sources else f for f in findings]


def _without(overrides: Overrides, var: str, stage: str) -> Overrides:
    """The same overrides less the user's --set of `var` for `stage` (scoped, or unscoped)."""
    scoped = overrides.stage_vars.get(stage, {})
    if var in scoped:
        stage_vars = {**overrides.stage_vars, stage: {k: v for k, v in scoped.items() if k != var}}
        return replace(overrides, stage_vars=stage_vars)
    variables = {k: v for k, v in overrides.vars.items() if k != var}
    if var in overrides.implied:  # the command's own value, as without the --set
        variables[var] = overrides.implied[var]
    return replace(overrides, vars=variables)


def _config(rendered: RenderedStage, overrides: Overrides, catalog) -> dict[str, Any] | None:
    outputs_under = rendered.outputs_under
    if outputs_under is not None and outputs_under == rendered.overrides.vars.get("output_root"):
        outputs_under = overrides.vars.get("output_root", outputs_under)  # a smoke run's root is its output_root
    try:
        renderer = Renderer(rendered.recipe, rendered.layout, overrides, catalog, outputs_under=outputs_under)
        return renderer.render(rendered.stage.name).config
    except LlfError:
        return None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)

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
    """`findings` with "(from --set VAR=VALUE)" added to those whose key a --set variable of the stage produced."""
    recipe = rendered.recipe
    changed = {k: v for k, v in rendered.variables.items() if k in recipe.vars and recipe.vars[k] != v}
    if not changed or not findings:
        return findings
    keys = {f.key for f in findings if "(from --set " not in f.message}
    base = _config(rendered, changed, catalog)
    if base is None:
        return findings
    keys = {k for k in keys if base.get(k, _MISSING) == rendered.config.get(k, _MISSING)}  # not set directly
    sources: dict[str, list[str]] = {}
    for var, value in changed.items():
        without = _config(rendered, {k: v for k, v in changed.items() if k != var}, catalog)
        for key in keys:
            if without is not None and without.get(key, _MISSING) != base.get(key, _MISSING):
                sources.setdefault(key, []).append(f"{var}={_show(value)}")
    return [replace(f, message=f"{f.message} (from --set {', --set '.join(sources[f.key])})",
                    fix=f"{f.fix}; it is rendered from {', '.join(s.split('=')[0] for s in sources[f.key])}: "
                        f"change that value")
            if f.key in sources else f for f in findings]


def _config(rendered: RenderedStage, variables: dict[str, Any], catalog) -> dict[str, Any] | None:
    try:
        renderer = Renderer(rendered.recipe, rendered.layout, Overrides(vars=dict(variables)), catalog)
        return renderer.render(rendered.stage.name).config
    except LlfError:
        return None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)

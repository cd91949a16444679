"""Validate rendered stages: the dataset entries LLaMA-Factory will see, the launch they get, the rules."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from llf_recipes import engines
from llf_recipes.catalog import Catalog
from llf_recipes.hardware import LOCAL_HOSTS, HostLayout
from llf_recipes.render import RenderedStage, needs_torchrun
from llf_recipes.schema import SUPPORTED_VERSION, VERB_ARGS, keys_for
from llf_recipes.schema.deepspeed import DeepSpeedSource
from llf_recipes.schema.rules import Finding, LaunchInfo, validate_config
from llf_recipes.suggest import nearest


@lru_cache(maxsize=16)
def _registered(path: str, mtime_ns: int) -> dict[str, dict[str, Any]]:
    # Keyed by mtime: validating a whole pack reads each data dir's file once, and a rewrite is seen.
    try:
        registered = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return {k: v for k, v in registered.items() if isinstance(v, dict)} if isinstance(registered, dict) else {}


def dataset_entries(catalog: Catalog, dataset_dir: str | Path | None) -> dict[str, dict[str, Any]]:
    """Entries from dataset_info.d/, then the ones in `<dataset_dir>/dataset_info.json` (what LLaMA-Factory reads)."""
    entries = {name: ds.entry for name, ds in catalog.datasets.items()}
    if isinstance(dataset_dir, (str, Path)) and dataset_dir:  # another kind is reported by the type check
        info = Path(dataset_dir) / "dataset_info.json"
        if info.is_file():
            entries.update(_registered(str(info.resolve()), info.stat().st_mtime_ns))
    return entries


def validate_stage(rendered: RenderedStage, catalog: Catalog, allow: set[str] | frozenset[str] = frozenset()) -> list[Finding]:
    """A LLaMA-Factory stage's config against its engine's argument snapshot and rules (engines/stages.py asks the
    stage's engine which checks apply: GRPO engines check their own configs)."""
    config = rendered.config
    engine = engines.get(rendered.engine)
    findings = engine_findings(engine, config, rendered.verb, f"{rendered.recipe.name}/{rendered.stage.name}")
    made_earlier = str(config.get("dataset_dir", "data")) in rendered.upstream_datasets  # a pairs stage writes it
    return [Finding(f.rule, f.key, f.message, f.fix, f.stage, "warning") if f.rule in allow else f
            for f in findings] + [f for f in explain_set_keys(rendered, engine.snapshot or SUPPORTED_VERSION, validate_config(
        config,
        rendered.verb,
        stage=f"{rendered.recipe.name}/{rendered.stage.name}",
        datasets={**dataset_entries(catalog, config.get("dataset_dir", "data")),
                  **rendered.upstream_datasets.get(str(config.get("dataset_dir", "data")), {})},
        launch=launch_for(rendered.layout, needs_torchrun(rendered)),
        deepspeed_json=DeepSpeedSource(str(rendered.deepspeed_source)) if rendered.deepspeed_source else None,
        allow=allow,
        version=engine.snapshot or SUPPORTED_VERSION,
        base=Path.cwd(),
    )) if not (made_earlier and f.rule == "dataset-dir-missing")]


def explain_set_keys(rendered: RenderedStage, version: str, findings: list[Finding]) -> list[Finding]:
    """An unknown key that came from `--set` may be a misspelt recipe variable: suggest the nearest name among the
    recipe's variables and the engine's arguments together."""
    if not rendered.set_keys:
        return findings
    variables = set(rendered.recipe.vars)
    arguments = set(keys_for(rendered.verb, version)) if rendered.verb in VERB_ARGS else set()
    out = []
    for f in findings:
        if f.rule != "unknown-key" or f.key not in rendered.set_keys or f.key in arguments:
            out.append(f)
            continue
        guess = nearest(f.key, sorted(variables | arguments))
        scope = "" if f.key in rendered.unscoped else f"{rendered.stage.name}."
        if guess in variables and guess not in arguments:
            fix = f"did you mean --set {scope}{guess}=...? (a variable of recipe {rendered.recipe.name})"
        elif guess:
            fix = f"did you mean --set {scope}{guess}=...?"
        else:
            fix = (f"drop --set {f.key}; the recipe's variables are {', '.join(sorted(variables))} "
                   f"(`llf-recipes show {rendered.recipe.name}`)")
        out.append(replace(f, message=f"{f.message}, nor a variable of recipe {rendered.recipe.name} (--set)",
                           fix=fix))
    return out


def engine_findings(engine, config: dict[str, Any], verb: str, stage: str) -> list[Finding]:
    """What the stage's engine cannot run (PPO on the main LLaMA-Factory)."""
    why = engine.refuses.get(str(config.get("stage"))) if verb == "train" else None
    if not why:
        return []
    other = next((e.name for e in engines.ENGINES.values() if e.snapshot and not e.refuses.get(str(config["stage"]))), None)
    return [Finding("ppo-needs-old-trl", "engine", f"engine {engine.name}: {why}",
                    f"run it on engine {other} (the default for this stage; drop `engine: {engine.name}`)"
                    if other else "use another engine", stage)]


def launch_for(layout: HostLayout, torchrun: bool) -> LaunchInfo:
    """The launch a layout gives: its process count, and whether some node is another machine."""
    remote = any(node.host not in LOCAL_HOSTS for node in layout.nodes)
    return LaunchInfo(torchrun=torchrun, world_size=layout.world_size, remote=remote)


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]

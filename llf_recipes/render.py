"""Render a recipe stage for a hardware layout into a plain LLaMA-Factory config.

Templates run in Jinja's immutable sandbox with StrictUndefined, within a time and memory budget, and values reach the
config as data (llf_recipes/templating.py): a misspelt variable fails with its name and line.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, UndefinedError

from llf_recipes import deepspeed_choice, engines, stage_dirs, templating, yamlio
from llf_recipes.catalog import Catalog
from llf_recipes.data.preference import registered_by
from llf_recipes.errors import LlfError
from llf_recipes.hardware import BatchPlan, HostLayout, plan_batch
from llf_recipes.recipe import Recipe, Stage
from llf_recipes.suggest import nearest

_BLOCK = re.compile(r"^###\s*(\S.*?)\s*$")
_TOP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:")
OVERRIDE_BLOCK = "overrides (--set)"


@dataclass
class Overrides:
    """`--set` values: recipe variables (for every stage, or `STAGE.NAME` for one), keys for every stage (stage
    None) or for one stage, and `~key` removals."""

    vars: dict[str, Any] = field(default_factory=dict)
    stage_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str | None, dict[str, Any]] = field(default_factory=dict)
    removals: dict[str | None, list[str]] = field(default_factory=dict)
    # the command's own values for variables (`run --output-root`, `run --smoke`'s output_root and deepspeed=none),
    # which `vars` holds unless a --set replaced them
    implied: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, items: list[str] | None, recipe: Recipe) -> Overrides:
        out = cls()
        stage_names = [s.name for s in recipe.stages]
        for item in items or []:
            remove = item.startswith("~")
            body = item[1:] if remove else item
            if not remove and "=" not in body:
                raise LlfError(f"--set {item!r} is not key=value", fix="write --set key=value, or --set ~key to remove a key")
            key, _, raw = body.partition("=")
            key = key.strip()
            stage: str | None = None
            if "." in key:
                stage, _, key = key.partition(".")
                if stage not in stage_names:
                    guess = nearest(stage, stage_names)
                    raise LlfError(
                        f"--set {item!r}: recipe {recipe.name!r} has no stage {stage!r}",
                        key=key,
                        fix=f"stages are {', '.join(stage_names)}" + (f"; did you mean {guess}.{key}?" if guess else ""),
                    )
            if not key:
                raise LlfError(f"--set {item!r} has an empty key")
            if remove:
                out.removals.setdefault(stage, []).append(key)
            elif key in recipe.vars:
                if stage is None:
                    out.vars[key] = yamlio.scalar(raw, key)
                else:
                    out.stage_vars.setdefault(stage, {})[key] = yamlio.scalar(raw, key)
            else:
                out.keys.setdefault(stage, {})[key] = yamlio.scalar(raw, key)
        return out


@dataclass
class RenderedStage:
    recipe: Recipe
    stage: Stage
    layout: HostLayout
    config: dict[str, Any]
    blocks: dict[str, str]  # key -> `### block` it sits under
    batch: BatchPlan | None
    deepspeed_profile: str | None
    deepspeed_source: Path | None  # the profile file the config's `deepspeed` points at
    needs: list[str]  # earlier stages whose outputs this stage reads
    variables: dict[str, Any]
    removed: set[str] = field(default_factory=set)
    engine: str = "llamafactory"  # the engine that runs it (llf_recipes/engines)
    translations: list[str] = field(default_factory=list)  # keys rewritten into that engine's dialect
    unscoped: set[str] = field(default_factory=set)  # keys an unscoped --set gave every stage (not STAGE.key)
    set_keys: set[str] = field(default_factory=set)  # every config key a --set gave this stage
    # datasets this stage registers when it runs ({dataset_dir: {name: entry}}: a pairs stage), and those the stages
    # it reads register, so a stage that trains on them validates before they exist
    provides: dict[str, dict[str, Any]] = field(default_factory=dict)
    upstream_datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the run directory (where its manifest and outputs are) of each stage this one reads, and what each registers
    upstream_dirs: dict[str, Path] = field(default_factory=dict)
    upstream_provides: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    overrides: Overrides = field(default_factory=Overrides)  # what it was rendered with
    outputs_under: str | None = None  # the root a smoke run confines it to
    # started by `llamafactory-cli` as written (a plain file checked by `validate FILE`), not by `llf-recipes run`
    as_written: bool = False

    @property
    def verb(self) -> str:
        return self.stage.verb

    @property
    def output_dir(self) -> str | None:
        return self.config.get("output_dir") or self.config.get("export_dir")

    @property
    def run_dir(self) -> Path:
        """Where the stage's config, log and manifest go: its output directory, or OUTPUT_ROOT/RECIPE/STAGE."""
        default = f"{self.variables.get('output_root', 'saves')}/{self.recipe.name}/{self.stage.name}"
        return Path(self.output_dir or default)

    def writers_of(self, directory: str | Path) -> list[str]:
        """The stages this one reads that register datasets in `directory` when they run (a pairs stage)."""
        return [name for name, provides in self.upstream_provides.items()
                if any(Path(d) == Path(directory) for d in provides)]

    def to_yaml(self) -> str:
        order: dict[str, list[str]] = {}
        for key in self.config:
            order.setdefault(self.blocks.get(key, OVERRIDE_BLOCK), []).append(key)
        parts = [f"# {self.recipe.name} / {self.stage.name} for {self.layout.describe()} (rendered by llf-recipes)\n"]
        for block, keys in order.items():
            parts.append(f"\n### {block}\n")
            parts.append(yamlio.dump({k: self.config[k] for k in keys}))
        return "".join(parts)

    def deepspeed_json(self) -> dict[str, Any] | None:
        if self.deepspeed_source is None:
            return None
        return json.loads(self.deepspeed_source.read_text(encoding="utf-8"))


def _template_line(exc: BaseException, name: str) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _count(value: Any, key: str, recipe: Recipe) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LlfError(f"{key} must be a positive whole number, not {value!r}", key=key, where=str(recipe.path),
                       fix=f"e.g. --set {key}=16")
    return value


def _template_failure(exc: BaseException, recipe: Recipe, stage: Stage) -> LlfError:
    """Whatever a template does wrong (a sandbox refusal, an overflow, a runaway loop) as one line with its place."""
    rel = _template_line(exc, "<template>")
    where = f"{recipe.path}:{stage.first_line + rel - 1}" if rel else f"{recipe.path} (stage {stage.name})"
    if isinstance(exc, templating.BudgetExceeded):
        return LlfError(f"stage {stage.name}: {exc}", where=where,
                        fix="a recipe's template should compute a config, not loop; "
                            "LLF_RENDER_TIME_S raises the budget if it really needs longer")
    if isinstance(exc, MemoryError):
        return LlfError(f"stage {stage.name}: rendering needed more than its memory budget "
                        f"({templating.MEMORY_BUDGET >> 20} MB)", where=where,
                        fix="LLF_RENDER_MEMORY_MB raises the budget if the template really needs it")
    if isinstance(exc, RecursionError):
        return LlfError(f"stage {stage.name}: the template recurses without end", where=where)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return LlfError(f"template error in stage {stage.name}: {type(exc).__name__}: {text}", where=where,
                    fix="templates may use variables, filters, tests and loops; not includes, imports or attributes "
                        "outside the sandbox")


class Renderer:
    """Renders the stages of one recipe for one layout; a stage may read an earlier stage's output by name."""

    def __init__(self, recipe: Recipe, layout: HostLayout, overrides: Overrides | None = None, catalog: Catalog | None = None,
                 outputs_under: str | None = None):
        self.recipe = recipe
        self.layout = layout
        self.overrides = overrides or Overrides()
        self.catalog = catalog or Catalog.discover()
        self.variables = {**recipe.vars, **self.overrides.vars}
        for values in [self.variables, *self.overrides.stage_vars.values()]:
            if "output_root" in values:
                stage_dirs.check_output_root(values["output_root"], str(recipe.path))
        # every stage writes under this directory (smoke runs); a stage set elsewhere is moved, see `moved`
        self.outputs_under = outputs_under
        self.moved: dict[str, tuple[str, str]] = {}  # stage -> (its own output directory, the one used instead)
        self._done: dict[str, RenderedStage] = {}
        self._active: list[str] = []

    # -------------------------------------------------------------- public
    def render(self, stage_name: str) -> RenderedStage:
        if stage_name in self._done:
            return self._done[stage_name]
        stage = self.recipe.stage(stage_name)
        if stage_name in self._active:
            raise LlfError(f"stages refer to each other in a cycle: {' -> '.join(self._active + [stage_name])}")
        self._active.append(stage_name)
        try:
            result = self._render(stage)
        finally:
            self._active.pop()
        self._done[stage_name] = result
        return result

    def render_all(self, stage_names: list[str] | None = None) -> list[RenderedStage]:
        names = stage_names or [s.name for s in self.recipe.stages]
        out = [self.render(n) for n in names]
        for stage, keys in self.overrides.removals.items():
            targets = [r for r in out if stage is None or r.stage.name == stage]
            for key in keys:
                if targets and not any(key in r.removed for r in targets):
                    every = sorted({k for r in targets for k in r.config})
                    guess = nearest(key, every)
                    raise LlfError(
                        f"--set ~{key}: no rendered stage has the key {key!r}",
                        key=key,
                        fix=f"did you mean ~{guess}?" if guess else "`llf-recipes render` shows the keys",
                    )
        stage_dirs.check_distinct(list(self._done.values()), str(self.recipe.path))
        return out

    # -------------------------------------------------------------- internals
    def _precision(self, variables: dict[str, Any]) -> tuple[bool, bool]:
        precision = str(variables.get("precision", "bf16")).lower()
        if precision not in ("bf16", "fp16", "fp32"):
            raise LlfError(f"precision {precision!r} is unknown", key="precision", fix="use bf16, fp16 or fp32")
        if self.layout.device == "cpu":
            return False, False
        return precision == "bf16", precision == "fp16"

    def _batch_size(self, key: str, stage: Stage) -> Any:
        """What the user typed wins: --set STAGE.KEY, then --set KEY, then the stage's header, then the recipe's vars."""
        for value in (self.overrides.stage_vars.get(stage.name, {}).get(key), self.overrides.vars.get(key),
                      getattr(stage, key)):
            if value is not None:
                return value
        return self.recipe.vars.get(key)

    def _stage_output(self, current: Stage, needs: set[str]):
        def stage_output(name: str) -> str:
            target = self.recipe.stage(name)
            if target.index >= current.index:
                raise LlfError(
                    f"stage {current.name!r} reads the output of {name!r}, which does not run before it",
                    where=str(self.recipe.path),
                    fix="a stage may only refer to stages listed before it in `stages`",
                )
            needs.add(name)
            rendered = self.render(name)
            if not rendered.output_dir:
                raise LlfError(f"stage {name!r} has no output_dir to refer to", key="output_dir", where=str(self.recipe.path))
            return rendered.output_dir

        return stage_output

    def _render(self, stage: Stage) -> RenderedStage:
        needs: set[str] = set()
        batch = None
        scoped = self.overrides.stage_vars.get(stage.name, {})  # --set STAGE.NAME=VALUE: a variable for this stage
        variables = {**self.variables, **scoped}
        if stage.verb == "train" and not self.recipe.plain:  # a plain LLaMA-Factory YAML keeps its own batch sizes
            global_batch = _count(self._batch_size("global_batch_size", stage), "global_batch_size", self.recipe)
            micro = _count(self._batch_size("micro_batch_size", stage), "micro_batch_size", self.recipe)
            try:
                batch = plan_batch(global_batch, micro, self.layout)
            except LlfError as exc:
                exc.where = f"{self.recipe.name} / {stage.name}"
                raise
        chosen = (deepspeed_choice.profile_file(variables, self.layout, self.catalog.search_dirs("recipes"))
                  if stage.verb == "train" else (None, None))
        profile, ds_path = chosen
        bf16, fp16 = self._precision(variables)
        context = {
            **variables,
            "recipe": self.recipe.name,
            "stage": stage.name,
            "output_dir": f"{variables['output_root']}/{self.recipe.name}/{stage.name}",
            "per_device_train_batch_size": batch.per_device_train_batch_size if batch else 1,
            "gradient_accumulation_steps": batch.gradient_accumulation_steps if batch else 1,
            # A grpo stage splits its batches itself (llf_recipes/grpo/settings.py): it reads the variable as given.
            "global_batch_size": batch.global_batch_size if batch else (
                self._batch_size("global_batch_size", stage) if stage.verb == "grpo" else None),
            "world_size": self.layout.world_size,
            "nnodes": self.layout.nnodes,
            "device": self.layout.device,
            "deepspeed": str(ds_path) if ds_path else None,
            "bf16": bf16,
            "fp16": fp16,
            "stage_output": self._stage_output(stage, needs),
        }
        name = f"{self.recipe.path}#{stage.name}"
        slots = templating.ValueSlots()
        try:
            with templating.budget():
                text = templating.render(stage.template, context, slots)
        except TemplateSyntaxError as exc:
            line = stage.first_line + (exc.lineno or 1) - 1
            raise LlfError(f"template error: {exc.message}", where=f"{self.recipe.path}:{line}") from None
        except UndefinedError as exc:
            rel = _template_line(exc, "<template>")
            where = f"{self.recipe.path}:{stage.first_line + rel - 1}" if rel else f"{self.recipe.path} (stage {stage.name})"
            missing = re.search(r"'(\w+)' is undefined", str(exc))
            guess = nearest(missing.group(1), context) if missing else None
            raise LlfError(
                f"template error: {exc.message}",
                key=missing.group(1) if missing else None,
                where=where,
                fix=f"did you mean {guess!r}?" if guess else "add it to the recipe's `vars` or pass --set NAME=VALUE",
            ) from None
        except LlfError:
            raise
        except Exception as exc:  # noqa: BLE001 - a template's failure of any kind is the recipe's, reported as such
            raise _template_failure(exc, self.recipe, stage) from None
        # lines of the rendered text are the template's as long as its tags do not add or remove lines
        config = slots.restore(yamlio.load(text, where=str(self.recipe.path), first_line=stage.first_line))
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise LlfError("a stage must render to a mapping of LLaMA-Factory keys", where=name)
        blocks = self._blocks(text)
        for scope in (None, stage.name):
            for key, value in self.overrides.keys.get(scope, {}).items():
                config[key] = value
        unscoped = set(self.overrides.keys.get(None, {})) - set(self.overrides.keys.get(stage.name, {}))
        removed = set()
        for scope in (None, stage.name):
            for key in self.overrides.removals.get(scope, []):
                if key in config:
                    del config[key]
                    removed.add(key)
        typed = {**self.overrides.vars, **scoped}  # the stage's --set deepspeed, its own scope first
        explicit = stage.verb == "train" and "deepspeed" in typed and typed["deepspeed"] != "auto"
        if chosen[1] is not None and any("deepspeed" in self.overrides.removals.get(s, []) for s in (None, stage.name)):
            removed.add("deepspeed")  # the layout's profile, which the template did not write, is not added
        profile, ds_path = deepspeed_choice.settle(config, blocks, chosen, explicit=explicit,
                                                   removed="deepspeed" in removed)
        stage_dirs.follow_moves(config, self.moved)
        if self.outputs_under:
            moved = stage_dirs.confine(config, self.outputs_under, self.recipe.name, stage.name)
            if moved:
                self.moved[stage.name] = moved
                stage_dirs.follow_moves(config, {stage.name: moved}, stage_dirs.WRITE_KEYS)  # its logs go along
        result = RenderedStage(
            recipe=self.recipe,
            stage=stage,
            layout=self.layout,
            config=config,
            blocks=blocks,
            batch=batch,
            deepspeed_profile=profile,
            deepspeed_source=ds_path,
            needs=sorted(needs),
            variables=variables,
            removed=removed,
            unscoped=unscoped,
            set_keys=set(self.overrides.keys.get(None, {})) | set(self.overrides.keys.get(stage.name, {})),
            overrides=self.overrides,
            outputs_under=self.outputs_under,
        )
        result.engine = engines.name_for(stage.verb, config, stage.engine)
        engines.adapt(result)
        result.provides = registered_by(stage.verb, config)  # a pairs stage registers a dataset a later one reads
        for name in result.needs:
            upstream = self._done[name]
            result.upstream_dirs[name] = upstream.run_dir
            result.upstream_provides[name] = upstream.provides
            for directory, entries in upstream.provides.items():
                result.upstream_datasets.setdefault(directory, {}).update(entries)
        return result

    @staticmethod
    def _blocks(text: str) -> dict[str, str]:
        blocks: dict[str, str] = {}
        current = "settings"
        for line in text.splitlines():
            m = _BLOCK.match(line)
            if m:
                current = m.group(1)
                continue
            k = _TOP_KEY.match(line)
            if k:
                blocks[k.group(1)] = current
        return blocks


def deepspeed_target(rendered: RenderedStage, directory: str | Path) -> Path | None:
    """Where the stage's DeepSpeed JSON goes: beside its YAML, so the run directory holds everything it used."""
    if rendered.deepspeed_source is None:
        return None
    name = rendered.deepspeed_source.name
    return Path(directory) / name


def write_stage(rendered: RenderedStage, yaml_path: str | Path) -> list[Path]:
    """Write the stage's YAML to `yaml_path` and its DeepSpeed JSON beside it; the YAML points at that JSON."""
    from llf_recipes.atomic import write_text

    yaml_path = Path(yaml_path)
    written: list[Path] = []
    ds_path = deepspeed_target(rendered, yaml_path.parent)
    if ds_path is not None:
        write_text(ds_path, json.dumps(rendered.deepspeed_json(), indent=2) + "\n")
        rendered.config["deepspeed"] = str(ds_path)
        written.append(ds_path)
    write_text(yaml_path, rendered.to_yaml())
    written.insert(0, yaml_path)
    return written


def needs_torchrun(rendered: RenderedStage) -> bool:
    """LLaMA-Factory uses torchrun for `train` only; DeepSpeed always needs it, even on one device."""
    if rendered.verb != "train":
        return False
    if rendered.as_written:  # llamafactory-cli starts torchrun with FORCE_TORCHRUN=1 or more than one device
        return rendered.layout.world_size > 1 or os.environ.get("FORCE_TORCHRUN", "").lower() in ("1", "true", "y")
    return rendered.layout.world_size > 1 or bool(rendered.config.get("deepspeed"))

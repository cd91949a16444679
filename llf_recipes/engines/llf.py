"""The `llf` engine: a recipe stage that runs one of llf-recipes' own verbs (generate, score, judge, pairs).

Such a stage is written like any other: a mapping of keys under `### blocks`, with `output_dir` and
`stage_output('...')` wiring. Its keys are the verb's options (`num_return` is `--num-return`), checked here before
anything runs; its command is `PYTHON -m llf_recipes VERB ...` with the llf engine's interpreter (the one llf-recipes
runs in unless `--engine llf=PYTHON`, $LLF_ENGINE_LLF or the engines file names the one the node has), started by
the same launcher, watchdog, lock and manifest as a training stage. The files a verb writes go into the stage's
output directory under fixed names (answers.jsonl, scored.jsonl, judged.jsonl, NAME.json), so the next stage reads
`{{ stage_output('generate') }}/answers.jsonl`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llf_recipes.schema.findings import Finding
from llf_recipes.stepslog import ENV as PROGRESS_ENV  # where a verb run as a stage appends its progress

if TYPE_CHECKING:  # render imports this module (a pairs stage's dataset): nothing of render's at run time
    from llf_recipes.engines.env import EngineEnv
    from llf_recipes.launch import NodeCommand
    from llf_recipes.render import RenderedStage
from llf_recipes.suggest import nearest

PROGRESS_FILE = "trainer_log.jsonl"  # the name the stage display reads, as for LLaMA-Factory's trainer


@dataclass(frozen=True)
class Option:
    flag: str | None  # None: the verb's positional argument
    kind: str  # str | path | int | float | bool
    required: bool = False
    help: str = ""


@dataclass(frozen=True)
class Verb:
    name: str
    options: dict[str, Option]
    outputs: dict[str, str]  # flag -> file name in the output directory
    fixed: tuple[str, ...] = ()  # flags every stage run passes
    data_dir_flag: str | None = None  # a flag that gets the output directory itself (pairs registers its dataset there)
    summary: str = ""

    def output_files(self, config: dict[str, Any], run_dir: Path) -> list[Path]:
        files = [run_dir / name for name in self.outputs.values()]
        if self.name == "pairs" and config.get("name"):
            files.append(run_dir / f"{config['name']}.json")
        return files


_SAMPLING = {
    "max_new_tokens": Option("--max-new-tokens", "int"),
    "temperature": Option("--temperature", "float"),
    "top_p": Option("--top-p", "float"),
    "top_k": Option("--top-k", "int"),
    "repetition_penalty": Option("--repetition-penalty", "float"),
    "backend": Option("--backend", "str"),  # hf | vllm
}

VERBS: dict[str, Verb] = {v.name: v for v in (
    Verb("generate", {
        "model": Option(None, "path", True, "the run (a stage's output directory) or model directory that answers"),
        "dataset": Option("--dataset", "str", True, "registered dataset(s) whose prompts are answered, or a file"),
        "dataset_dir": Option("--data-dir", "path"),
        "template": Option("--template", "str"),
        "num_return": Option("--num-return", "int"),
        "limit": Option("--limit", "int"),
        "seed": Option("--seed", "int"),
        **_SAMPLING,
    }, {"--output": "answers.jsonl"}, summary="answers to every prompt"),
    Verb("score", {
        "answers": Option(None, "path", True, "what a generate stage wrote"),
        "reward_model": Option("--reward-model", "path", True, "an rm stage's output directory"),
        "device": Option("--device", "str"),
    }, {"--output": "scored.jsonl"}, summary="reward-model scores"),
    Verb("judge", {
        "answers": Option(None, "path", True, "what a generate stage wrote"),
        "judge_url": Option("--judge-url", "str", True),
        "judge_model": Option("--judge-model", "str", True),
        "judge_key_env": Option("--judge-key-env", "str"),
        "rubric": Option("--rubric", "path"),
        "concurrency": Option("--concurrency", "int"),
        "retries": Option("--retries", "int"),
        "backoff": Option("--backoff", "float"),
        "timeout": Option("--timeout", "float"),
        "max_tokens": Option("--max-tokens", "int"),
    }, {"--output": "judged.jsonl", "--cache": "judge-cache.jsonl", "--results": "evaluation_results.json"},
        summary="judge grades"),
    Verb("pairs", {
        "scored": Option(None, "path", True, "what a score or judge stage wrote"),
        "name": Option("--name", "str", True, "the preference dataset registered in the output directory"),
        "min_margin": Option("--min-margin", "float"),
    }, {}, fixed=("--force",), data_dir_flag="--data-dir", summary="preference pairs"),
)}
STAGE_KEYS = {"output_dir"}  # every stage has it; the verb's files go there


def _kind_ok(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, (str, Path)) and str(value) != ""


def findings(rendered: RenderedStage) -> list[Finding]:
    """Unknown keys (with the nearest valid one), missing required keys, and values of the wrong kind."""
    stage = f"{rendered.recipe.name}/{rendered.stage.name}"
    verb = VERBS[rendered.verb]
    config = rendered.config
    known = {*verb.options, *STAGE_KEYS}
    for key in sorted(rendered.unscoped - known):  # an unscoped --set meant for the training stages
        config.pop(key, None)
    out: list[Finding] = []
    for key, value in config.items():
        if key not in known:
            guess = nearest(str(key), known)
            out.append(Finding("unknown-key", str(key), f"is not a key of a `{verb.name}` stage",
                               (f"did you mean {guess!r}? " if guess else "") + f"keys: {', '.join(sorted(known))}",
                               stage))
            continue
        option = verb.options.get(key)
        kind = option.kind if option else "path"
        if value is not None and not _kind_ok(kind, value):
            out.append(Finding("wrong-type", str(key), f"{value!r} is not {'an' if kind == 'int' else 'a'} {kind}",
                               f"e.g. --set {rendered.stage.name}.{key}=...", stage))
    for key in sorted(k for k, o in verb.options.items() if o.required and config.get(k) in (None, "")):
        out.append(Finding("missing-key", key, f"a `{verb.name}` stage needs it ({verb.options[key].help})",
                           f"add `{key}: ...` to the stage", stage))
    if not config.get("output_dir"):
        out.append(Finding("missing-key", "output_dir", f"a `{verb.name}` stage writes into its output_dir",
                           "add `output_dir: {{ output_dir }}` to the stage", stage))
    return out


def argv_for(verb: Verb, config: dict[str, Any], run_dir: Path, python: str) -> list[str]:
    """The verb's command line from the stage's keys (in the verb's option order, so it reads the same every time),
    run by `python` (the engine's interpreter on the node)."""
    argv = [python, "-m", "llf_recipes", verb.name]
    for key, option in verb.options.items():
        value = config.get(key)
        if value is None:
            continue
        if option.flag is None:
            argv.insert(4, str(value))
        elif option.kind == "bool":
            if value:
                argv.append(option.flag)
        else:
            argv += [option.flag, str(value)]
    for flag, name in verb.outputs.items():
        argv += [flag, str(run_dir / name)]
    if verb.data_dir_flag:
        argv += [verb.data_dir_flag, str(run_dir)]
    return argv + list(verb.fixed)


@dataclass(frozen=True)
class LlfPlan:
    """A planned llf stage, with the fields of launch.StagePlan so `run` prints, records and executes it alike."""

    rendered: RenderedStage
    config_path: Path
    files: tuple[Path, ...]
    torchrun: bool
    commands: tuple[NodeCommand, ...]
    engine: EngineEnv | None = None
    outputs: tuple[Path, ...] = field(default=())

    @property
    def stage(self) -> str:
        return self.rendered.stage.name

    @property
    def verb(self) -> Verb:
        return VERBS[self.rendered.verb]

    @property
    def headline(self) -> str:
        return f"llf-recipes {self.rendered.verb} ({self.verb.summary})"

    @property
    def checks_own_data(self) -> bool:
        """The verb reads and checks its inputs itself (a generate stage's dataset is prompts, of any layout)."""
        return True

    @property
    def continues_output(self) -> bool:
        """An interrupted generate stage keeps the rows it wrote: its rerun with the same fingerprint continues them."""
        return self.rendered.verb == "generate"

    def start_fresh(self) -> None:
        """Before a run that is not a continuation: what an earlier computation wrote goes, so nothing is mixed."""
        for path in self.outputs:
            for stale in (path, path.with_name(path.name + ".log")):
                if stale.is_file():
                    stale.unlink()
        steps = self.config_path.parent / PROGRESS_FILE
        if steps.is_file():
            steps.unlink()

    def write_files(self) -> list[Path]:
        from llf_recipes.atomic import write_text

        write_text(self.config_path, self.rendered.to_yaml())
        return [self.config_path]

    def finalize(self) -> dict[str, Any]:
        """After a successful run: the stage's figures (all_results.json, which the manifest's metrics read) and the
        model record (none: these stages train nothing; the model a generate stage used is named)."""
        from llf_recipes.atomic import write_text

        run_dir = self.config_path.parent
        write_text(run_dir / "all_results.json", json.dumps(metrics(self.rendered.verb, self.outputs), indent=2) + "\n")
        model = self.rendered.config.get("model") if self.rendered.verb == "generate" else None
        return {"base": None, "adapters": [], "template": None, "stage": self.rendered.verb, "merged": False,
                "used": str(Path(str(model)).resolve()) if model else None}

    def describe(self) -> list[str]:
        lines = [f"  write {self.config_path}  (the stage's keys, for the record)"]
        lines += [f"  writes {p}" for p in self.outputs]
        for c in self.commands:
            lines.append(f"  run on node {c.node_rank} ({c.host}): {c.shell_line()}")
        return lines


def metrics(verb: str, outputs: tuple[Path, ...]) -> dict[str, Any]:
    """What the stage produced, counted from its output files."""
    rows = []
    main = outputs[0] if outputs else None
    if main is not None and main.is_file():
        text = main.read_text(encoding="utf-8")
        rows = json.loads(text) if main.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
    if verb == "generate":
        return {"prompts": len(rows), "answers": sum(len(r.get("answers") or []) for r in rows)}
    if verb in ("score", "judge"):
        values = [s for r in rows for s in (r.get("scores") or []) if isinstance(s, (int, float))]
        return {"scored": len(values), "mean_score": round(sum(values) / len(values), 6) if values else None}
    return {"pairs": len(rows)}


def plan(rendered: RenderedStage, overrides: dict[str, str] | None = None) -> tuple[LlfPlan, list[Finding]]:
    """The stage's plan and what is wrong with its keys (the plan is only run when there is nothing); `overrides`:
    --engine NAME=PYTHON."""
    from llf_recipes.engines.env import resolve
    from llf_recipes.launch import NodeCommand

    found = findings(rendered)
    run_dir = rendered.run_dir
    verb = VERBS[rendered.verb]
    config_path = run_dir / f"llf-{rendered.stage.name}.yaml"
    engine = resolve("llf", overrides)
    argv = argv_for(verb, rendered.config, run_dir, engine.python)
    layout = rendered.layout
    env = {**layout.device_env(), PROGRESS_ENV: str(run_dir / PROGRESS_FILE)}
    command = NodeCommand(0, layout.nodes[0].host, tuple(argv), env)
    outputs = tuple(verb.output_files(rendered.config, run_dir))
    return LlfPlan(rendered, config_path, (config_path,), False, (command,), engine, outputs), found


def smoke(rendered: RenderedStage, user_keys: dict[str, Any]) -> None:
    """A smoke run: a few prompts, short answers; what the user --set wins."""
    if rendered.verb == "generate":
        rendered.config.update({"limit": 4, "max_new_tokens": 16})
    rendered.config.update(user_keys)

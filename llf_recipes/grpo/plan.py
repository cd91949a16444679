"""Plan a GRPO stage for either backend: the files to write, the command per node, and the checks before launch.

The plan has the fields of launch.StagePlan (rendered, config_path, files, torchrun, commands), so `run` prints,
records and executes it like any stage, plus `ray` (the Ray cluster a multi-node EasyR1 run needs: the launchers start
it on every node, head first, for the run's lifetime) and `write_files()`, which writes what the engine reads.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llf_recipes import yamlio
from llf_recipes.engines.env import EngineEnv
from llf_recipes.engines.env import resolve as resolve_engine
from llf_recipes.errors import LlfError
from llf_recipes.grpo import easyr1, easyr1_rules
from llf_recipes.grpo import settings as grpo_settings
from llf_recipes.grpo.trl_args import grpo_config_kwargs, lora_kwargs
from llf_recipes.launch import NodeCommand
from llf_recipes.launchers.ray import RayCluster
from llf_recipes.render import RenderedStage
from llf_recipes.schema.rules import Finding
from llf_recipes.suggest import nearest

TRL_ENTRY = "llf_recipes.grpo.trl_backend"
TRL_STEP = re.compile(r"^checkpoint-(\d+)$")
EASYR1_STEP = re.compile(r"^global_step_(\d+)$")


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    what: str  # one line for --dry-run
    text: str | None = None  # printed in full by --dry-run (configs, templates, code); None for data


@dataclass(frozen=True)
class GrpoPlan:
    rendered: RenderedStage
    config_path: Path
    files: tuple[Path, ...]
    torchrun: bool
    commands: tuple[NodeCommand, ...]
    backend: str
    settings: dict[str, Any]
    data_file: Path | None
    ray: RayCluster | None = None  # Ray on every node (head first) for as long as `commands` run
    planned: tuple[PlannedFile, ...] = ()
    engine_config: dict[str, Any] = field(default_factory=dict)  # EasyR1's tree, or GRPOConfig's fields
    engine: EngineEnv | None = None  # the environment that runs it (llf_recipes/engines)

    @property
    def stage(self) -> str:
        return self.rendered.stage.name

    def write_files(self) -> list[Path]:
        """Write what the engine reads; raise LlfError (naming the key and the fix) when the result would not run."""
        if self.backend == "easyr1":
            return _write_easyr1(self)
        return _write_trl(self)

    def finalize(self, which: str = "latest") -> dict[str, Any]:
        """After a successful run: the model it leaves, in the manifest's form (base + adapter chain, template).

        TRL saves the adapter in the run directory itself. EasyR1 saves checkpoints; the chosen one's LoRA adapter
        and tokenizer are copied into the run directory, so `ask`, `chat` and `export` treat both alike.
        """
        run_dir = self.config_path.parent.resolve()
        s = self.settings
        lora = s["finetuning_type"] == "lora"
        model = {"base": _model_path(s, self.rendered)[0], "adapters": [str(run_dir)] if lora else [],
                 "template": s.get("template"), "finetuning_type": s["finetuning_type"], "stage": "grpo",
                 "merged": not lora, "backend": self.backend}
        if not lora and self.backend == "trl":
            model["base"] = str(run_dir)
        if self.backend == "easyr1":
            return easyr1.result_model(run_dir, s, model["base"], which, strict=False)
        return model

    @property
    def checkpoint_dir(self) -> Path:
        """Where the engine writes its checkpoints: TRL's checkpoint-N in the run directory, EasyR1's global_step_N
        under checkpoints/."""
        run_dir = self.config_path.parent
        return easyr1.RunFiles(run_dir).checkpoints if self.backend == "easyr1" else run_dir

    @property
    def checkpoint_pattern(self) -> re.Pattern[str]:
        return EASYR1_STEP if self.backend == "easyr1" else TRL_STEP

    @property
    def checkpoint_marker(self) -> str:
        """The file an engine writes last into a checkpoint: one without it is incomplete."""
        return "dataloader.pt" if self.backend == "easyr1" else "trainer_state.json"

    def resume_from(self, checkpoint: Path | None) -> None:
        """Start from `checkpoint` (one this stage's own fingerprint wrote), or fresh when None: the engine is told
        exactly, never left to find a checkpoint by itself."""
        if self.backend == "easyr1":
            trainer = self.engine_config.setdefault("trainer", {})
            trainer["find_last_checkpoint"] = False
            if checkpoint is not None:
                trainer["load_checkpoint_path"] = str(checkpoint.resolve())
            elif "load_checkpoint_path" not in (self.settings.get("easyr1") or {}):
                trainer.pop("load_checkpoint_path", None)
            tracker = self.checkpoint_dir / "checkpoint_tracker.json"
            if checkpoint is None and tracker.is_file() and not any(self.checkpoint_dir.glob("global_step_*")):
                tracker.unlink()  # it described checkpoints moved aside: the fresh run writes its own
        else:
            self.engine_config["resume_from_checkpoint"] = str(checkpoint.resolve()) if checkpoint is not None else None

    def check_nodes(self, ssh_config: str | None, local_only: bool = False) -> None:
        """EasyR1's environment on every node of the layout (here only, for a cluster the run attaches to), all
        nodes asked at once; raises one LlfError naming each problem. TRL runs in llf-recipes' own environment."""
        if self.backend != "easyr1":
            return
        from llf_recipes.grpo.easyr1_nodes import check_nodes

        layout = self.rendered.layout
        hosts = [layout.nodes[0].host] if local_only else [n.host for n in layout.nodes]
        check_nodes(hosts, self.commands[0].argv[0], ssh_config, layout.device == "cuda", self.stage)

    def describe(self) -> list[str]:
        lines = []
        for f in self.planned:
            lines.append(f"  write {f.path}  ({f.what})")
            if f.text is not None:
                lines += [f"    | {line}" for line in f.text.rstrip("\n").splitlines()]
        if self.ray is not None:
            for rank, host in enumerate(self.ray.hosts):
                env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.ray.device_env.items())
                role = "head, first" if rank == 0 else "worker"
                lines.append(f"  ray on node {rank} ({host}, {role}): {env} {shlex.join(self.ray.start_argv(rank))}")
        for c in self.commands:
            ray = f"RAY_ADDRESS={self.ray.address} " if self.ray is not None else ""
            lines.append(f"  run on node {c.node_rank} ({c.host}): {ray}{c.shell_line()}")
        if self.ray is not None:
            lines.append(f"  then Ray stops on every node ({len(self.ray.hosts)}) when the run ends")
        return lines


# ---------------------------------------------------------------- data


def dataset_file(name: str, dataset_dir: str, catalog, stage: str | None) -> tuple[Path | None, list[Finding]]:
    """The converted rows a GRPO stage reads: an entry's file in dataset_dir, or a .jsonl/.json path."""
    if name.endswith((".jsonl", ".json")):
        path = Path(name)
    else:
        from llf_recipes.validation import dataset_entries

        entries = dataset_entries(catalog, dataset_dir)
        entry = entries.get(name)
        if entry is None:
            guess = nearest(name, entries)
            return None, [Finding("undefined-dataset", "dataset", f"no dataset entry defines {name!r}",
                                  (f"did you mean {guess!r}? " if guess else "") + "use an entry from dataset_info.d/ "
                                  "or a .jsonl file with prompt and answer fields", stage)]
        if not entry.get("file_name"):
            return None, [Finding("grpo-data", "dataset", f"entry {name!r} has no local file_name",
                                  f"convert it first: llf-recipes prepare {name} --data-dir {dataset_dir}", stage)]
        path = Path(dataset_dir) / entry["file_name"]
    if not path.is_file():
        return path, [Finding("grpo-data", "dataset", f"{path} does not exist yet; the run stops before launch until it does",
                              f"llf-recipes prepare {name} --data-dir {dataset_dir}   (--sample-data for the bundled rows)",
                              stage, "warning")]
    return path, []


# ---------------------------------------------------------------- planning


def choose_backend(requested: str | None, settings: dict[str, Any], layout) -> str:
    """--backend, else the stage's `backend` key, else trl on one node and easyr1 across nodes."""
    backend = requested or settings.get("backend") or "auto"
    if backend == "auto":
        return "easyr1" if layout.nnodes > 1 else "trl"
    if backend not in grpo_settings.BACKENDS:
        raise LlfError(f"backend {backend!r} is unknown", key="backend", fix="use --backend trl or --backend easyr1")
    return backend


def _device_env(layout) -> dict[str, str]:
    if layout.device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": ""}
    var = "ASCEND_RT_VISIBLE_DEVICES" if layout.device == "npu" else "CUDA_VISIBLE_DEVICES"
    return {var: layout.visible_devices()}


def easyr1_engine(settings: dict[str, Any], overrides: dict[str, str] | None = None) -> EngineEnv:
    """EasyR1's environment: --engine easyr1=PYTHON, the stage's `easyr1_python`, $LLF_ENGINE_EASYR1,
    $LLF_EASYR1_PYTHON, the engines file, `llf-recipes engine install easyr1`, else python3 on PATH."""
    return resolve_engine("easyr1", overrides, extra=settings.get("easyr1_python"))


def easyr1_python(settings: dict[str, Any]) -> str:
    return easyr1_engine(settings).python


def easyr1_dir(settings: dict[str, Any]) -> str | None:
    return settings.get("easyr1_dir") or os.environ.get("LLF_EASYR1_DIR")


def ray_program(python: str) -> str:
    """Ray's CLI from EasyR1's environment: beside its interpreter when that is a path, else on PATH."""
    if os.sep in python:
        return str(Path(python).parent / "ray")
    return "ray"


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
    if chosen == "trl" and layout.nnodes > 1:
        findings.append(Finding("grpo-backend-layout", "backend", f"the TRL backend runs on one node; this layout has "
                                f"{layout.nnodes}", "use --backend easyr1 for several nodes, or --gpus for one node", stage))
        return _unplanned(rendered, chosen), findings
    batch = grpo_settings.batch_for(s, layout.world_size, where=stage)
    if chosen == "easyr1":
        plan, more = _plan_easyr1(rendered, s, batch, data, base, stage, easyr1_engine(s, engines))
    else:
        plan, more = _plan_trl(rendered, s, batch, data, resolve_engine("trl", engines))
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
    return GrpoPlan(rendered, path, (path,), False, (), backend or "trl", dict(rendered.config), None)


def _model_path(s: dict[str, Any], rendered: RenderedStage) -> tuple[str, bool]:
    """(model path for the engine, produced by an earlier stage of this run)."""
    model = str(s["model_name_or_path"])
    produced = bool(rendered.needs) and not Path(model).exists()
    if produced or Path(model).exists():
        return str(Path(model).resolve()), produced
    return model, False


def _plan_easyr1(rendered, s, batch, data, base: Path, stage: str, engine: EngineEnv) -> tuple[GrpoPlan, list[Finding]]:
    layout = rendered.layout
    files = easyr1.RunFiles(Path(s["output_dir"]).resolve())
    model, produced = _model_path(s, rendered)
    config = easyr1.render_config(s, layout, files, batch, model, base,
                                  f"{rendered.recipe.name}-{rendered.stage.name}")
    planned = {files.train, files.val, files.reward, files.format_prompt, files.config}
    if produced:
        planned.add(Path(model))
    findings = easyr1_rules.validate(config, stage, planned)
    if data is not None and data.is_file():
        try:
            train, _val = easyr1.split_rows(data, s["val_size"], s["seed"])
            findings += easyr1_rules.check_rows(easyr1.flatten(config), stage, len(train))
            rows = f"{len(train)} training rows from {data}"
            val_rows = f"{len(_val)} validation rows from {data}"
        except LlfError as exc:
            findings.append(Finding("grpo-data", "dataset", exc.message, exc.fix or "fix the data file", stage))
            rows = val_rows = f"rows from {data}"
    else:
        rows, val_rows = f"training rows from {data}", f"validation rows from {data}"
    if s["finetuning_type"] != "lora" and not easyr1_dir(s):
        findings.append(Finding("easyr1-merge", "easyr1_dir", "a full-parameter EasyR1 run leaves FSDP shards; merging "
                                "them into a model needs EasyR1's scripts/model_merger.py, and easyr1_dir is not set",
                                "set easyr1_dir (or $LLF_EASYR1_DIR) to your EasyR1 checkout; without it the run "
                                "completes and `export` merges later", stage, "warning"))
    python = engine.python
    prompt = easyr1.format_prompt_text(s["format_prompt"]) if s["format_prompt"] in ("gsm8k", "gsm8k_zero_shot") else None
    planned_files = [
        PlannedFile(files.train, rows),
        PlannedFile(files.val, val_rows),
        *([PlannedFile(files.format_prompt, "EasyR1 format prompt (Jinja, rendered with the question as `content`)", prompt)]
          if prompt is not None else []),
        PlannedFile(files.reward, "EasyR1 reward module", easyr1.reward_module_text()),
        PlannedFile(files.reward_lib, "copy of llf_recipes.grpo.rewards and its helpers for the reward module"),
        PlannedFile(files.config, f"EasyR1 config for {layout.describe()}", yamlio.dump(config)),
    ]
    env = {**_device_env(layout), "PYTHONUNBUFFERED": "1"}
    head = layout.nodes[0].host
    main = NodeCommand(0, head, (python, "-m", "verl.trainer.main", f"config={files.config}"), env)
    cluster = None
    if layout.nnodes > 1:
        accelerator = "NPU" if layout.device == "npu" else "GPU"
        cluster = RayCluster(tuple(n.host for n in layout.nodes), int(s["ray_port"]), ray_program(python), python,
                             0 if layout.device == "cpu" else layout.per_node, _device_env(layout), accelerator)
    plan = GrpoPlan(rendered, files.config, tuple(f.path for f in planned_files), False, (main,), "easyr1", s, data,
                    cluster, tuple(planned_files), config, engine)
    return plan, findings


def _plan_trl(rendered, s, batch, data, engine: EngineEnv) -> tuple[GrpoPlan, list[Finding]]:
    layout = rendered.layout
    config_path = Path(s["output_dir"]) / f"llf-{rendered.stage.name}.yaml"
    model, _ = _model_path(s, rendered)
    kwargs = grpo_config_kwargs(s, batch)
    doc = {**s, "model_name_or_path": model, "data_file": str(data) if data else None, "world_size": layout.world_size,
           "grpo_config": kwargs, "lora_config": lora_kwargs(s)}
    torchrun = layout.world_size > 1
    module = ("-m", TRL_ENTRY, str(config_path))
    python = engine.python  # llf-recipes' own interpreter unless pointed elsewhere (it imports llf_recipes)
    argv = (python, "-m", "torch.distributed.run", f"--nproc_per_node={layout.per_node}", *module) if torchrun \
        else (python, *module)
    env = {**_device_env(layout), "PYTHONUNBUFFERED": "1"}
    planned = (PlannedFile(config_path, "GRPO settings and the GRPOConfig/LoRA arguments the TRL backend uses",
                           yamlio.dump(doc)),)
    command = NodeCommand(0, layout.nodes[0].host, argv, env)
    return GrpoPlan(rendered, config_path, (config_path,), torchrun, (command,), "trl", s, data, planned=planned,
                    engine_config=doc, engine=engine), []


# ---------------------------------------------------------------- writing


def _write_trl(plan: GrpoPlan) -> list[Path]:
    from llf_recipes.atomic import write_text

    if plan.data_file is None or not plan.data_file.is_file():
        raise LlfError(f"{plan.data_file} does not exist", key="dataset",
                       fix=f"llf-recipes prepare {plan.settings['dataset']} --data-dir {plan.settings['dataset_dir']}")
    write_text(plan.config_path, yamlio.dump(plan.engine_config))
    return [plan.config_path]


def _write_easyr1(plan: GrpoPlan) -> list[Path]:
    from llf_recipes.atomic import write_text

    s = plan.settings
    files = easyr1.RunFiles(plan.config_path.parent)
    if plan.data_file is None or not plan.data_file.is_file():
        raise LlfError(f"{plan.data_file} does not exist", key="dataset",
                       fix=f"llf-recipes prepare {s['dataset']} --data-dir {s['dataset_dir']}")
    train, val = easyr1.split_rows(plan.data_file, s["val_size"], s["seed"])  # read everything before writing
    easyr1.write_jsonl(files.train, train)
    easyr1.write_jsonl(files.val, val)
    prompt = easyr1.format_prompt_text(s["format_prompt"]) if s["format_prompt"] in ("gsm8k", "gsm8k_zero_shot") else None
    if prompt is not None:
        write_text(files.format_prompt, prompt)
    easyr1.copy_reward_lib(files.reward_lib)
    write_text(files.reward, easyr1.reward_module_text())
    findings = easyr1_rules.validate(plan.engine_config, f"{plan.rendered.recipe.name}/{plan.stage}")
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise LlfError("the EasyR1 config would fail at start-up:\n" + "\n".join(f.format() for f in errors),
                       key=errors[0].key, fix=errors[0].fix)
    write_text(files.config, yamlio.dump(plan.engine_config))
    return [files.train, files.val, *([files.format_prompt] if prompt else []), files.reward, files.config]


"""A GRPO stage planned for EasyR1: its data split, format prompt, reward module and config under the run directory,
`python -m verl.trainer.main config=FILE` on the head node, and a Ray cluster across the layout's nodes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from llf_recipes import yamlio
from llf_recipes.engines.easyr1 import config as easyr1
from llf_recipes.engines.easyr1 import easyr1_dir, easyr1_engine, ray_program, rules
from llf_recipes.engines.env import EngineEnv
from llf_recipes.engines.grpo_stage import GrpoPlan, PlannedFile, model_path
from llf_recipes.errors import LlfError
from llf_recipes.launchers.command import NodeCommand
from llf_recipes.launchers.ray import RayCluster
from llf_recipes.schema.rules import Finding

engine = easyr1_engine


def layout_problem(layout) -> tuple[str, str] | None:
    """EasyR1 runs on any layout: Ray across its nodes."""
    return None


def _prompt_text(s: dict[str, Any]) -> str | None:
    return easyr1.format_prompt_text(s["format_prompt"]) if s["format_prompt"] in ("gsm8k", "gsm8k_zero_shot") else None


def plan(rendered, s, batch, data, base: Path, stage: str, engine: EngineEnv) -> tuple[GrpoPlan, list[Finding]]:
    layout = rendered.layout
    files = easyr1.RunFiles(Path(s["output_dir"]).resolve())
    model, produced = model_path(s, rendered)
    config = easyr1.render_config(s, layout, files, batch, model, base,
                                  f"{rendered.recipe.name}-{rendered.stage.name}")
    planned = {files.train, files.val, files.reward, files.format_prompt, files.config}
    if produced:
        planned.add(Path(model))
    findings = rules.validate(config, stage, planned)
    if data is not None and data.is_file():
        try:
            train, _val = easyr1.split_rows(data, s["val_size"], s["seed"])
            findings += rules.check_rows(easyr1.flatten(config), stage, len(train))
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
    prompt = _prompt_text(s)
    planned_files = [
        PlannedFile(files.train, rows),
        PlannedFile(files.val, val_rows),
        *([PlannedFile(files.format_prompt, "EasyR1 format prompt (Jinja, rendered with the question as `content`)", prompt)]
          if prompt is not None else []),
        PlannedFile(files.reward, "EasyR1 reward module", easyr1.reward_module_text()),
        PlannedFile(files.reward_lib, "copy of llf_recipes.grpo.rewards and its helpers for the reward module"),
        PlannedFile(files.config, f"EasyR1 config for {layout.describe()}", yamlio.dump(config)),
    ]
    env = {**layout.device_env(), "PYTHONUNBUFFERED": "1"}
    head = layout.nodes[0].host
    main = NodeCommand(0, head, (python, "-m", "verl.trainer.main", f"config={files.config}"), env)
    cluster = None
    if layout.nnodes > 1:
        accelerator = "NPU" if layout.device == "npu" else "GPU"
        cluster = RayCluster(tuple(n.host for n in layout.nodes), int(s["ray_port"]), ray_program(python), python,
                             0 if layout.device == "cpu" else layout.per_node, layout.device_env(), accelerator)
    result = GrpoPlan(rendered, files.config, tuple(f.path for f in planned_files), False, (main,), "easyr1", s, data,
                      DRIVER, cluster, tuple(planned_files), config, engine)
    return result, findings


class EasyR1Driver:
    checkpoint_pattern = re.compile(r"^global_step_(\d+)$")
    checkpoint_marker = "dataloader.pt"

    def write_files(self, plan: GrpoPlan) -> list[Path]:
        from llf_recipes.atomic import write_text

        s = plan.settings
        files = easyr1.RunFiles(plan.config_path.parent)
        if plan.data_file is None or not plan.data_file.is_file():
            raise LlfError(f"{plan.data_file} does not exist", key="dataset",
                           fix=f"llf-recipes prepare {s['dataset']} --data-dir {s['dataset_dir']}")
        train, val = easyr1.split_rows(plan.data_file, s["val_size"], s["seed"])  # read everything before writing
        easyr1.write_jsonl(files.train, train)
        easyr1.write_jsonl(files.val, val)
        prompt = _prompt_text(s)
        if prompt is not None:
            write_text(files.format_prompt, prompt)
        easyr1.copy_reward_lib(files.reward_lib)
        write_text(files.reward, easyr1.reward_module_text())
        findings = rules.validate(plan.engine_config, f"{plan.rendered.recipe.name}/{plan.stage}")
        errors = [f for f in findings if f.severity == "error"]
        if errors:
            raise LlfError("the EasyR1 config would fail at start-up:\n" + "\n".join(f.format() for f in errors),
                           key=errors[0].key, fix=errors[0].fix)
        write_text(files.config, yamlio.dump(plan.engine_config))
        return [files.train, files.val, *([files.format_prompt] if prompt else []), files.reward, files.config]

    def finalize(self, plan: GrpoPlan, model: dict[str, Any], which: str) -> dict[str, Any]:
        """The chosen checkpoint's LoRA adapter and tokenizer are copied into the run directory, so `ask`, `chat` and
        `export` treat it like any LoRA run; a full-parameter run is merged by EasyR1's own script."""
        from llf_recipes.engines.easyr1.checkpoints import result_model

        return result_model(plan.config_path.parent.resolve(), plan.settings, model["base"], which, strict=False)

    def checkpoint_dir(self, plan: GrpoPlan) -> Path:
        return easyr1.RunFiles(plan.config_path.parent).checkpoints

    def resume_from(self, plan: GrpoPlan, checkpoint: Path | None) -> None:
        trainer = plan.engine_config.setdefault("trainer", {})
        trainer["find_last_checkpoint"] = False
        if checkpoint is not None:
            trainer["load_checkpoint_path"] = str(checkpoint.resolve())
        elif "load_checkpoint_path" not in (plan.settings.get("easyr1") or {}):
            trainer.pop("load_checkpoint_path", None)
        checkpoints = self.checkpoint_dir(plan)
        tracker = checkpoints / "checkpoint_tracker.json"
        if checkpoint is None and tracker.is_file() and not any(checkpoints.glob("global_step_*")):
            tracker.unlink()  # it described checkpoints moved aside: the fresh run writes its own

    def check_nodes(self, plan: GrpoPlan, ssh_config: str | None, local_only: bool) -> None:
        """EasyR1's environment on every node, all nodes asked at once; one LlfError naming each problem."""
        from llf_recipes.engines.easyr1.nodes import check_nodes

        layout = plan.rendered.layout
        hosts = [layout.nodes[0].host] if local_only else [n.host for n in layout.nodes]
        env = plan.engine
        python = str(env.python) if env is not None else plan.commands[0].argv[0]
        check_nodes(hosts, python, ssh_config, layout.device == "cuda", plan.stage,
                    env.engine if env is not None else None)


DRIVER = EasyR1Driver()

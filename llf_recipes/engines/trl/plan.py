"""A GRPO stage planned for TRL: one settings file (the stage's GRPO settings with GRPOConfig's and LoRA's arguments)
and `python -m llf_recipes.engines.trl.backend FILE` on the one node, through torchrun for several devices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llf_recipes import checkpoints, yamlio
from llf_recipes.engines.env import EngineEnv, resolve
from llf_recipes.engines.grpo_stage import GrpoPlan, PlannedFile, model_path
from llf_recipes.engines.trl.args import grpo_config_kwargs, lora_kwargs
from llf_recipes.errors import LlfError
from llf_recipes.launchers.command import NodeCommand
from llf_recipes.schema.rules import Finding

ENTRY = "llf_recipes.engines.trl.backend"


def layout_problem(layout) -> tuple[str, str] | None:
    """(what, fix) when the layout is not one this engine runs on: TRL runs on one node (torchrun across its devices)."""
    if layout.nnodes > 1:
        return (f"the TRL backend runs on one node; this layout has {layout.nnodes}",
                "use --backend easyr1 for several nodes, or --gpus for one node")
    return None


def engine(settings: dict[str, Any], overrides: dict[str, str] | None = None) -> EngineEnv:
    """llf-recipes' own interpreter unless --engine trl=PYTHON (or the engines file) points elsewhere."""
    return resolve("trl", overrides)


def plan(rendered, s, batch, data, base: Path, stage: str, engine: EngineEnv) -> tuple[GrpoPlan, list[Finding]]:
    layout = rendered.layout
    config_path = Path(s["output_dir"]) / f"llf-{rendered.stage.name}.yaml"
    model, _ = model_path(s, rendered)
    kwargs = grpo_config_kwargs(s, batch)
    doc = {**s, "model_name_or_path": model, "data_file": str(data) if data else None, "world_size": layout.world_size,
           "grpo_config": kwargs, "lora_config": lora_kwargs(s)}
    torchrun = layout.world_size > 1
    module = ("-m", ENTRY, str(config_path))
    python = engine.python  # llf-recipes' own interpreter unless pointed elsewhere (it imports llf_recipes)
    argv = (python, "-m", "torch.distributed.run", f"--nproc_per_node={layout.per_node}", *module) if torchrun \
        else (python, *module)
    env = {**layout.device_env(), "PYTHONUNBUFFERED": "1"}
    planned = (PlannedFile(config_path, "GRPO settings and the GRPOConfig/LoRA arguments the TRL backend uses",
                           yamlio.dump(doc)),)
    command = NodeCommand(0, layout.nodes[0].host, argv, env)
    return GrpoPlan(rendered, config_path, (config_path,), torchrun, (command,), "trl", s, data, DRIVER,
                    planned=planned, engine_config=doc, engine=engine), []


class TrlDriver:
    checkpoint_pattern = checkpoints.HF_PATTERN  # TRL checkpoints as transformers' Trainer does
    checkpoint_marker = checkpoints.COMPLETE_MARKER

    def write_files(self, plan: GrpoPlan) -> list[Path]:
        from llf_recipes.atomic import write_text

        if plan.data_file is None or not plan.data_file.is_file():
            raise LlfError(f"{plan.data_file} does not exist", key="dataset",
                           fix=f"llf-recipes prepare {plan.settings['dataset']} --data-dir {plan.settings['dataset_dir']}")
        write_text(plan.config_path, yamlio.dump(plan.engine_config))
        return [plan.config_path]

    def finalize(self, plan: GrpoPlan, model: dict[str, Any], which: str) -> dict[str, Any]:
        """TRL saves the adapter (or the full model) in the run directory itself."""
        if not model["adapters"]:
            model["base"] = str(plan.config_path.parent.resolve())
        return model

    def checkpoint_dir(self, plan: GrpoPlan) -> Path:
        return plan.config_path.parent

    def resume_from(self, plan: GrpoPlan, checkpoint: Path | None) -> None:
        plan.engine_config["resume_from_checkpoint"] = str(checkpoint.resolve()) if checkpoint is not None else None

    def check_nodes(self, plan: GrpoPlan, ssh_config: str | None, local_only: bool) -> None:
        """TRL runs in llf-recipes' own environment, on one node: nothing to ask."""


DRIVER = TrlDriver()

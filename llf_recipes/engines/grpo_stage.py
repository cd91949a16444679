"""A planned GRPO stage, whichever engine runs it: the files to write, the command per node, and what its engine does
with them (write them, resume, read its checkpoints, turn the finished run into a model, ask its nodes).

The plan has the fields of launch.StagePlan (rendered, config_path, files, torchrun, commands), so `run` prints,
records and executes it like any stage, plus `ray` (the Ray cluster a multi-node EasyR1 run needs: the launchers start
it on every node, head first, for the run's lifetime). What differs between engines is the `driver`, which each
engine's plan module supplies (engines/easyr1/plan.py, engines/trl/plan.py).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llf_recipes.engines.env import EngineEnv
from llf_recipes.launchers.command import NodeCommand
from llf_recipes.launchers.ray import RayCluster
from llf_recipes.render import RenderedStage
from llf_recipes.schema.rules import Finding
from llf_recipes.suggest import nearest


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    what: str  # one line for --dry-run
    text: str | None = None  # printed in full by --dry-run (configs, templates, code); None for data


class Driver(Protocol):
    """What one GRPO engine does with a plan of its own."""

    checkpoint_pattern: re.Pattern[str]
    checkpoint_marker: str  # the file the engine writes last into a checkpoint: one without it is incomplete

    def write_files(self, plan: GrpoPlan) -> list[Path]: ...
    def finalize(self, plan: GrpoPlan, model: dict[str, Any], which: str) -> dict[str, Any]: ...
    def checkpoint_dir(self, plan: GrpoPlan) -> Path: ...
    def resume_from(self, plan: GrpoPlan, checkpoint: Path | None) -> None: ...
    def check_nodes(self, plan: GrpoPlan, ssh_config: str | None, local_only: bool) -> None: ...


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
    driver: Driver
    ray: RayCluster | None = None  # Ray on every node (head first) for as long as `commands` run
    planned: tuple[PlannedFile, ...] = ()
    engine_config: dict[str, Any] = field(default_factory=dict)  # EasyR1's tree, or GRPOConfig's fields
    engine: EngineEnv | None = None  # the environment that runs it (llf_recipes/engines)

    @property
    def stage(self) -> str:
        return self.rendered.stage.name

    @property
    def checks_own_data(self) -> bool:
        """The engine reads its own converted rows (prompt + answer), checked when write_files writes them."""
        return True

    def write_files(self) -> list[Path]:
        """Write what the engine reads; raise LlfError (naming the key and the fix) when the result would not run."""
        return self.driver.write_files(self)

    def finalize(self, which: str = "latest") -> dict[str, Any]:
        """After a successful run: the model it leaves, in the manifest's form (base + adapter chain, template)."""
        run_dir = self.config_path.parent.resolve()
        s = self.settings
        lora = s["finetuning_type"] == "lora"
        model = {"base": model_path(s, self.rendered)[0], "adapters": [str(run_dir)] if lora else [],
                 "template": s.get("template"), "finetuning_type": s["finetuning_type"], "stage": "grpo",
                 "merged": not lora, "backend": self.backend}
        return self.driver.finalize(self, model, which)

    @property
    def checkpoint_dir(self) -> Path:
        return self.driver.checkpoint_dir(self)

    @property
    def checkpoint_pattern(self) -> re.Pattern[str]:
        return self.driver.checkpoint_pattern

    @property
    def checkpoint_marker(self) -> str:
        return self.driver.checkpoint_marker

    def resume_from(self, checkpoint: Path | None) -> None:
        """Start from `checkpoint` (one this stage's own fingerprint wrote), or fresh when None: the engine is told
        exactly, never left to find a checkpoint by itself."""
        self.driver.resume_from(self, checkpoint)

    def check_nodes(self, ssh_config: str | None, local_only: bool = False) -> None:
        """The engine's environment on every node of the layout (here only, for a cluster the run attaches to)."""
        self.driver.check_nodes(self, ssh_config, local_only)

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


def model_path(s: dict[str, Any], rendered: RenderedStage) -> tuple[str, bool]:
    """(model path for the engine, produced by an earlier stage of this run)."""
    model = str(s["model_name_or_path"])
    produced = bool(rendered.needs) and not Path(model).exists()
    if produced or Path(model).exists():
        return str(Path(model).resolve()), produced
    return model, False

"""Running a recipe's stages: one manifest per stage, completed stages skipped, interrupted ones resumed.

A stage is skipped when its manifest says it completed with the same fingerprint: the hash of the rendered config,
the hashes of its dataset files and the fingerprints of the stages it reads. It resumes from its latest checkpoint
when an earlier attempt with the same fingerprint stopped part-way. Everything else runs from scratch.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llf_recipes import changes, checkpoints, manifest, records
from llf_recipes.atomic import recover
from llf_recipes.console import verbose
from llf_recipes.data.check import preflight
from llf_recipes.data.layouts import remote_dir
from llf_recipes.errors import LlfError
from llf_recipes.launch import StagePlan
from llf_recipes.ownership import StageLock, me
from llf_recipes.render import write_stage

# Keys that change how a run starts, not what it computes: they stay out of the fingerprint.
UNHASHED_KEYS = {"resume_from_checkpoint", "overwrite_output_dir"}


@dataclass(frozen=True)
class Decision:
    action: str  # run | skip | resume
    reason: str
    checkpoint: Path | None = None


def run_dir_of(plan: StagePlan) -> Path:
    return plan.config_path.parent


def dataset_files(config: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The local files behind the stage's datasets, with their sha256 (reused from `previous` when size and mtime match)."""
    dataset_dir = Path(str(config.get("dataset_dir") or "data"))
    try:
        info = json.loads((dataset_dir / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        info = {}
    known = (previous or {}).get("datasets") or {}
    out: dict[str, dict[str, Any]] = {}
    for name in _dataset_names(config):
        entry = info.get(name) if isinstance(info, dict) else None
        if entry is None and Path(name).suffix in (".json", ".jsonl") and Path(name).is_file():
            entry = {"file_name": str(Path(name).resolve())}  # a file given by path (a generate stage's prompts)
        if not isinstance(entry, dict) or not entry.get("file_name"):
            source = (entry or {}).get("hf_hub_url") or (entry or {}).get("ms_hub_url") if isinstance(entry, dict) else None
            out[name] = {"source": source}
            continue
        path = (dataset_dir / str(entry["file_name"])).resolve()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stats = [(p, p.stat()) for p in files if p.exists()]
        size = sum(s.st_size for _, s in stats)
        mtime = max((s.st_mtime_ns for _, s in stats), default=0)
        old = known.get(name) or {}
        if old.get("file") == str(path) and old.get("bytes") == size and old.get("mtime_ns") == mtime and old.get("sha256"):
            digest = old["sha256"]
        else:
            digest = _hash_files([p for p, _ in stats])
        out[name] = {"file": str(path), "bytes": size, "mtime_ns": mtime, "sha256": digest}
    return out


def _hash_files(paths: list[Path]) -> str | None:
    if not paths:
        return None
    if len(paths) == 1:
        return manifest.file_sha256(paths[0])
    import hashlib

    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.name.encode() + b"\0" + manifest.file_sha256(p).encode())
    return digest.hexdigest()


def fingerprint(plan: StagePlan, previous: dict[str, Any] | None) -> dict[str, Any]:
    config = {k: v for k, v in plan.rendered.config.items() if k not in UNHASHED_KEYS}
    inputs = {}
    for name in plan.rendered.needs:
        # Read from the stage's manifest: a rerun upstream changes what this stage starts from.
        upstream_dir = _stage_dir(plan, name)
        data = manifest.read(upstream_dir) or {}
        inputs[name] = {"run_dir": str(upstream_dir), "config_hash": data.get("config_hash"),
                        "finished_at": data.get("finished_at"), "status": data.get("status")}
    return {"config_hash": manifest.config_hash(config), "datasets": dataset_files(plan.rendered.config, previous),
            "inputs": inputs}


def _stage_dir(plan: StagePlan, name: str) -> Path:
    """The run directory of a stage this one reads, as render placed it (its own output_dir when it sets one)."""
    return plan.rendered.upstream_dirs[name]


def _strip(ds: dict[str, Any]) -> dict[str, Any]:
    return {k: {"file": v.get("file"), "sha256": v.get("sha256"), "source": v.get("source")} for k, v in ds.items()}


def _same(previous: dict[str, Any], current: dict[str, Any]) -> bool:
    return (
        previous.get("config_hash") == current["config_hash"]
        and _strip(previous.get("datasets") or {}) == _strip(current["datasets"])
        and previous.get("inputs") == current["inputs"]
    )


def identity(current: dict[str, Any]) -> str:
    """The digest a stage's checkpoints are stamped with: equal exactly when `_same` holds."""
    return checkpoints.identity_of({"config_hash": current["config_hash"], "datasets": _strip(current["datasets"]),
                                    "inputs": current["inputs"]})


def checkpoint_layout(plan: StagePlan) -> tuple[Path, re.Pattern[str], str] | None:
    """Where a stage's trainer writes checkpoints, how they are named, and the file it writes last into one: the
    Trainer's checkpoint-N in the run directory for `train`, the plan's own for engines that differ (EasyR1's
    checkpoints/global_step_N); None for a stage without checkpoints."""
    if hasattr(plan, "checkpoint_dir"):
        return plan.checkpoint_dir, plan.checkpoint_pattern, plan.checkpoint_marker
    if plan.rendered.verb == "train":
        return run_dir_of(plan), checkpoints.HF_PATTERN, checkpoints.COMPLETE_MARKER
    return None


def decide(plan: StagePlan, previous: dict[str, Any] | None, current: dict[str, Any], force: bool,
           layout: tuple[Path, re.Pattern[str], str] | None) -> Decision:
    """Run, skip or resume; `layout` is the stage's checkpoint_layout."""
    if previous is None:
        return Decision("run", "first run")
    if force:
        return Decision("run", "--force")
    same = _same(previous, current)
    status = previous.get("status")
    if status == "completed" and same:
        return Decision("skip", f"completed {previous.get('finished_at', '')} with the same config and data")
    if status in ("running", "failed", "interrupted", "abandoned") and same and getattr(plan, "continues_output", False):
        # an engine that appends finished rows (generate) carries on from the last one it wrote
        return Decision("resume", f"the last attempt stopped ({status}); continuing the rows it wrote")
    if status in ("running", "failed", "interrupted", "abandoned") and same and layout is not None:
        # only a checkpoint this very computation wrote, in the attempt being continued
        where, pattern, marker = layout
        # checkpoints the last attempt left unstamped (killed) are its own, as run_stage claims them
        claimed = (previous.get("identity"), previous.get("lineage"))
        checkpoint = checkpoints.latest(where, identity(current), previous.get("lineage"), pattern, marker, claimed)
        if checkpoint is not None:
            return Decision("resume", f"the last attempt stopped ({status}); resuming from {checkpoint.name}", checkpoint)
        return Decision("run", f"the last attempt stopped ({status}) before its first checkpoint")
    if not same:
        return Decision("run", changes.reason(previous, current, plan.rendered.config, UNHASHED_KEYS))
    return Decision("run", f"the last attempt ended {status}")


def check_inputs(plan: StagePlan, running_now: set[str], command: Callable[[str], str] | None = None) -> None:
    """Every stage this one reads has completed (or runs earlier in this invocation). `command(STAGE)`: the command
    that runs that stage with the options of this run (--smoke, --output-root, ...)."""
    for name in plan.rendered.needs:
        if name in running_now:
            continue
        upstream = _stage_dir(plan, name)
        data = manifest.read(upstream)
        if not data or data.get("status") != "completed":
            state = f"its last run {data.get('status')}" if data else "it has no run manifest"
            raise LlfError(
                f"stage {plan.stage} reads the output of stage {name!r} in {upstream}, but {state}",
                fix=f"run stage {name} first "
                    f"({command(name) if command else f'llf-recipes run {plan.rendered.recipe.name} --stage {name}'}), "
                    "or run the recipe without --stage/--from",
            )


def _dataset_names(config: dict[str, Any]) -> list[str]:
    return [n.strip() for key in ("dataset", "eval_dataset") for n in str(config.get(key) or "").split(",") if n.strip()]


def check_registered(plan: StagePlan, running_now: set[str] | None = None) -> bool:
    """Every dataset the stage reads is registered where LLaMA-Factory looks, and reads as it will read it. False
    when left for later (to be checked just before the stage starts): `running_now` holds a stage that writes its
    dataset_dir (a pairs stage)."""
    config = plan.rendered.config
    if plan.checks_own_data:
        return True  # an engine that reads and checks its own input (GRPO's converted rows, an llf verb's prompts)
    if running_now and set(plan.rendered.writers_of(str(config.get("dataset_dir") or "data"))) & running_now:
        return False
    if remote_dir(config.get("dataset_dir") or "data"):
        return True  # LLaMA-Factory reads the names (or dataset_info.json) from the hub: nothing local to check
    dataset_dir = Path(str(config.get("dataset_dir") or "data"))
    info_path = dataset_dir / "dataset_info.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        info = {}
    except (OSError, json.JSONDecodeError) as exc:
        raise LlfError(f"cannot read {info_path}: {exc}", where=str(info_path)) from None
    for name in _dataset_names(config):
        entry = info.get(name) if isinstance(info, dict) else None
        if not isinstance(entry, dict):
            raise LlfError(
                f"stage {plan.stage} reads dataset {name!r}, which is not registered in {info_path}",
                key=name,
                fix=f"llf-recipes prepare {name} --data-dir {dataset_dir} (add --sample-data for the bundled rows), or "
                    f"llf-recipes prepare --recipe {plan.rendered.recipe.name} --data-dir {dataset_dir}",
            )
        stage = str(config.get("stage") or plan.stage)
        for note in preflight(entry, name, stage, dataset_dir, media_dir=config.get("media_dir")):
            print(f"note: {note}", file=sys.stderr)
    return True


def free_port(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def ensure_master_port(plan: StagePlan, explicit: bool) -> None:
    """A local torchrun needs its rendezvous port free: pick the next free one unless the user chose it."""
    if not plan.torchrun or len(plan.commands) != 1:
        return
    env = plan.commands[0].env
    port = int(env.get("MASTER_PORT", "0") or 0)
    if not port or free_port(port):
        return
    if explicit:
        raise LlfError(f"MASTER_PORT {port} is in use on this machine", key="--master-port",
                       fix="pick another port, or stop what listens on it")
    for candidate in range(port + 1, port + 200):
        if free_port(candidate):
            print(f"note: MASTER_PORT {port} is in use; using {candidate}", file=sys.stderr)
            env["MASTER_PORT"] = str(candidate)
            return
    raise LlfError(f"no free port found from {port} to {port + 199}", key="--master-port")


Executor = Callable[[StagePlan, Path], "int | None"]


@contextlib.contextmanager
def stage_display(plan: StagePlan, position: str, log: Path):
    """The live progress of a stage, read from the trainer log its rank 0 writes in the output directory (on one
    node or many: the launchers show only warnings, errors and their own lines meanwhile)."""
    from llf_recipes.console import sink

    if verbose():
        yield
        return
    from llf_recipes.progress import StageProgress

    total = plan.rendered.config.get("max_steps")
    shown = StageProgress(run_dir_of(plan), f"{position} {plan.stage}", total if isinstance(total, int) else None)
    with shown, sink(shown.echo):
        yield


def run_stage(plan: StagePlan, execute: Executor, *, force: bool, position: str, layout_source: str,
              rerun: str | None = None) -> int:
    """Run one stage under its lock; the manifest is written before launch and completed after. `rerun`: the `run`
    command line that runs it again with the same options, recorded for the verbs that suggest it."""
    run_dir = run_dir_of(plan)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = StageLock(run_dir, plan.stage, watch=plan.config_path)
    lock.acquire()
    try:
        recover([manifest.path_for(run_dir), plan.config_path])  # temporaries a killed run left
        previous = manifest.read(run_dir)
        layout = checkpoint_layout(plan)
        if previous is not None and layout:  # checkpoints an attempt left unstamped (it was killed) belong to it
            checkpoints.claim(layout[0], previous.get("identity"), previous.get("lineage"), layout[1])
        current = fingerprint(plan, previous)
        decision = decide(plan, previous, current, force, layout)
        log = run_dir / f"llf-{plan.stage}.log"
        if decision.action == "skip":
            print(f"{position} stage {plan.stage}: skipped, {decision.reason} (--force reruns it)", flush=True)
            return 0
        digest = identity(current)
        lineage = previous["lineage"] if decision.action == "resume" else checkpoints.new_lineage()
        if layout is not None:  # nothing in the directory that this attempt may not resume from
            aside = checkpoints.set_aside(layout[0], (digest, lineage) if decision.action == "resume" else None,
                                          layout[1], layout[2], finals=layout[0] == run_dir)
            if aside.moved or aside.finals:
                print(f"note: stage {plan.stage}: {aside.describe(layout[0])}", file=sys.stderr, flush=True)
        if hasattr(plan, "resume_from"):  # an engine with its own resume switch (EasyR1, TRL): told either way
            plan.resume_from(decision.checkpoint)
        elif decision.checkpoint is not None:
            plan.rendered.config["resume_from_checkpoint"] = str(decision.checkpoint)
        if hasattr(plan, "start_fresh") and decision.action != "resume":
            plan.start_fresh()  # what an earlier computation wrote into the output files must not be continued
        # A grpo stage writes what its engine reads (EasyR1's data, prompt, reward module and config; TRL's settings).
        files = plan.write_files() if hasattr(plan, "write_files") else write_stage(plan.rendered, plan.config_path)
        argv = shlex.join(plan.commands[0].argv)
        why = f"{decision.reason}; log: {log}"
        # Quietly, the command is left to the log's attempt header; --verbose shows it here too.
        print(f"{position} stage {plan.stage}: " + (f"{argv}  ({why})" if verbose() else why), flush=True)
        started = time.time()
        record = {**_record(plan, current, files, log, layout_source, decision), "identity": digest, "lineage": lineage,
                  **({"rerun": rerun} if rerun else {})}
        record["attempt"] = records.attempt_number(previous)
        records.write_header(log, record["attempt"], plan.commands[0].shell_line(), current, decision.reason)
        code: int | None = 130
        refused = False
        try:  # from the first write on: a Ctrl-C at any moment still ends in the final record
            manifest.write(run_dir, {**record, "status": "running", "owner": me(), "started_at": manifest.now()})
            with stage_display(plan, position, log):
                code = execute(plan, log)
            if code == 0 and hasattr(plan, "finalize"):
                record["model"] = plan.finalize()  # e.g. EasyR1's latest LoRA adapter, copied into the run directory
        except LlfError as exc:
            refused = True  # a launcher's checks refused it before its process started: this attempt never ran
            records.refused(run_dir, previous, log, exc.message)
            raise
        finally:
            if layout is not None:
                checkpoints.claim(layout[0], digest, lineage, layout[1])
            if not refused:
                # 143: a multi-node run stopped by SIGTERM, which a single-node run reports as 130; both were stopped
                status = {None: "planned", 0: "completed", 130: "interrupted", 143: "interrupted"}.get(code, "failed")
                # what the launcher recorded while the stage ran (a SLURM job id) stays in the manifest
                launched = (manifest.read(run_dir) or {}).get("launch")
                manifest.write(run_dir, {
                    **record,
                    **({"launch": launched} if launched else {}),
                    "status": status,
                    "exit_code": code,
                    "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                    "finished_at": manifest.now(),
                    "duration_s": round(time.time() - started, 3),
                    "metrics": manifest.final_metrics(run_dir) if code == 0 else {},
                })
        if code not in (None, 0):
            where = "" if len(plan.commands) > 1 else f"; log: {log}"  # the multi-node executor names node and log
            print(f"error: stage {plan.stage} {'was interrupted' if code in (130, 143) else f'failed with exit code {code}'}{where}",
                  file=sys.stderr)
        return code or 0
    finally:
        lock.release()


def _record(plan: StagePlan, current: dict[str, Any], files: list[Path], log: Path, layout_source: str,
            decision: Decision) -> dict[str, Any]:
    rendered = plan.rendered
    layout = rendered.layout
    return {
        "recipe": {"name": rendered.recipe.name, "path": str(rendered.recipe.path), "hash": rendered.recipe.text_hash},
        "stage": plan.stage,
        "verb": rendered.verb,
        "stage_index": rendered.stage.index,
        "output_dir": str(run_dir_of(plan).resolve()),
        "cwd": str(Path.cwd()),
        "config_path": str(plan.config_path),
        "files": [str(f) for f in files],
        "log": str(log),
        "config": rendered.config,
        **current,
        "start": decision.action,
        "resumed_from": str(decision.checkpoint) if decision.checkpoint else None,
        "layout": {"source": layout_source, "describe": layout.describe(), "device": layout.device,
                   "nnodes": layout.nnodes, "world_size": layout.world_size,
                   "hosts": [{"host": n.host, "slots": n.slots} for n in layout.nodes]},
        "nodes": [{"node_rank": c.node_rank, "host": c.host, "argv": list(c.argv), "env": c.env} for c in plan.commands],
        **_engine_record(plan),
        "model": manifest.model_of(rendered.config,
                                   run_dir_of(plan).resolve() if rendered.verb in ("train", "grpo") else None),
    }


def _engine_record(plan: StagePlan) -> dict[str, Any]:
    """The engine that runs the stage and the versions read from its own interpreter (not llf-recipes')."""
    engine = getattr(plan, "engine", None)
    if engine is None:
        return {"versions": manifest.versions()}
    record = engine.record()
    return {"engine": record, "versions": {"llf-recipes": manifest.versions()["llf-recipes"], **record["versions"]}}

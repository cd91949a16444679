"""`llf-recipes run NAME`: render, validate, write and launch each stage; `--dry-run` prints the plan."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from llf_recipes import dry_run, preflight, summary
from llf_recipes.cli.common import (
    add_catalog_args,
    add_layout_args,
    add_override_args,
    add_verb,
    catalog_from,
    layout_from,
    print_findings,
)
from llf_recipes.engines import stages
from llf_recipes.engines.env import parse_overrides
from llf_recipes.hardware import LOCAL_HOSTS, cpu_layout
from llf_recipes.launch import NCCL_PRESETS, StagePlan
from llf_recipes.launchers import LAUNCHERS, LaunchOptions
from llf_recipes.launchers import execute as launch
from llf_recipes.pipeline import check_inputs, check_registered, ensure_master_port, run_stage
from llf_recipes.render import Overrides, Renderer
from llf_recipes.smoke import SMOKE_OUTPUT_ROOT, VERSION_TAG, apply_smoke, default_cache_dir, tiny_model_path
from llf_recipes.stage_dirs import check_output_root
from llf_recipes.validation import errors


def add_parser(sub) -> None:
    p = add_verb(sub, "run", "run a recipe's stages with llamafactory-cli (or print the plan with --dry-run)", """
        llf-recipes run sft-huanhuan --gpus 0,1 --dry-run
        llf-recipes run zhihu --hostfile 2node-8gpu --dry-run --json
        llf-recipes run zhihu --from dpo --gpus 0,1,2,3
        llf-recipes run sft-huanhuan --gpus 0 --set num_train_epochs=1 --output-root /data/saves
        llf-recipes run zhihu --smoke                 # every stage, a few CPU steps on a tiny model
        llf-recipes run zhihu --force --stage dpo     # rerun a completed stage
        llf-recipes run grpo-gsm8k --backend easyr1 --hostfile 2node-8gpu --dry-run   # Ray start per node, then EasyR1
        llf-recipes run grpo-gsm8k --backend trl --gpus 0
    """)
    p.add_argument("name", help="recipe name or path to a recipe file")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--stage", help="run only this stage")
    which.add_argument("--from", dest="from_stage", metavar="STAGE", help="run this stage and every later one")
    p.add_argument("--dry-run", action="store_true", help="print, per stage and node, the files, argv and environment; run nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    p.add_argument("--output-root", metavar="DIR", help="where stage outputs go (default: saves/, saves/smoke/ with --smoke)")
    p.add_argument("--force", action="store_true", help="rerun stages that already completed with the same config and data")
    p.add_argument("--smoke", action="store_true",
                   help="check the whole recipe on CPU in minutes: the tiny local model, a few steps per stage, 16 rows "
                        "of each registered dataset, no DeepSpeed; 4-bit bitsandbytes stays (it runs on CPU), other "
                        "quantization is removed with a note; outputs only under saves/smoke/ (or --output-root)")
    p.add_argument("--nccl", metavar=f"{'|'.join(sorted(NCCL_PRESETS))}[:IFACE]",
                   help="NCCL environment preset for multi-node runs; socket:eth0 also pins the network interface")
    p.add_argument("--launcher", choices=LAUNCHERS, default="auto",
                   help="how stages start: local on this machine; ssh to every host of the hostfile; slurm as an sbatch "
                        "job (one task per node); print the per-node commands; ray through LLaMA-Factory's Ray path or "
                        "EasyR1 on a running cluster (--ray-address) (default: ssh when the hostfile names other hosts, "
                        "else local)")
    p.add_argument("--sbatch", metavar="OPTION", action="append", default=[],
                   help="--launcher slurm: an extra sbatch option, e.g. --sbatch=--partition=gpu --sbatch=--time=4:00:00")
    p.add_argument("--ssh-config", metavar="FILE", help="ssh client configuration (ssh -F FILE) for reaching the hosts")
    p.add_argument("--ray-address", metavar="HOST:PORT",
                   help="--launcher ray: the running cluster to attach to (default: $RAY_ADDRESS); it is checked "
                        "first and never started or stopped. Without one, Ray runs on the hostfile's nodes for the run")
    p.add_argument("--backend", choices=("easyr1", "trl"),
                   help="engine for grpo stages: easyr1 (GPUs, one or many nodes, its own interpreter: --set "
                        "easyr1_python=PATH or $LLF_EASYR1_PYTHON) or trl (one node, CPU too); default: the stage's "
                        "`backend`, else trl on one node and easyr1 across nodes")
    p.add_argument("--engine", action="append", default=[], metavar="NAME=PYTHON",
                   help="run an engine's stages with an existing interpreter, e.g. llamafactory-ppo=/opt/ppo/bin/python "
                        "(repeatable; `llf-recipes engine list` shows the engines)")
    p.add_argument("--install-engines", action="store_true",
                   help="install the engines the stages need (llf-recipes engine install NAME) instead of stopping")
    add_layout_args(p)
    add_override_args(p)
    add_catalog_args(p)
    p.set_defaults(func=main)


def selected_stages(recipe, stage: str | None, from_stage: str | None) -> list[str]:
    names = [s.name for s in recipe.stages]
    if stage:
        return [recipe.stage(stage).name]
    if from_stage:
        return names[recipe.stage(from_stage).index:]
    return names


def unused_stage_sets(args, stages: list[str], selected: list[str]) -> list[str]:
    """A note per `--set STAGE.KEY` whose stage this run leaves out (--stage, --from): it changes nothing."""
    chosen = f"--stage {args.stage}" if args.stage else f"--from {args.from_stage}"
    notes = []
    for item in args.overrides:
        stage = item.lstrip("~").partition("=")[0].partition(".")[0] if "." in item.partition("=")[0] else None
        if stage in stages and stage not in selected:
            notes.append(f"note: --set {item} changes nothing: stage {stage} does not run here ({chosen}); a stage "
                         f"that reads it uses its output as it is")
    return notes


def smoke_ignores(args) -> str:
    """The layout options a smoke run leaves aside, as typed ('' when none)."""
    given = [f"--hostfile {args.hostfile}" if getattr(args, "hostfile", None) else "",
             f"--gpus {args.gpus}" if getattr(args, "gpus", None) is not None else "",
             f"--device {args.device}" if getattr(args, "device", "cuda") not in ("cuda", "cpu") else ""]
    given = [g for g in given if g]
    return " and ".join(given) + (" is" if len(given) == 1 else " are") if given else ""


def build_plans(args, catalog) -> tuple[list[StagePlan], list]:
    recipe = catalog.recipe(args.name)
    smoke = getattr(args, "smoke", False)
    layout = cpu_layout() if smoke else layout_from(args, catalog)
    if smoke:
        ignored = smoke_ignores(args)
        if ignored:
            print(f"note: smoke: every stage runs as 1 CPU process on this machine; {ignored} not used (without "
                  "--smoke the run uses it)", file=sys.stderr)
    overrides = list(args.overrides)
    if args.output_root is not None:
        check_output_root(args.output_root, "--output-root")
    output_root = args.output_root or (SMOKE_OUTPUT_ROOT if smoke else None)
    if output_root:
        overrides.insert(0, f"output_root={output_root}")
    if smoke:
        overrides.insert(0, "deepspeed=none")
    parsed = Overrides.parse(overrides, recipe)
    parsed.implied = {**({"output_root": output_root} if output_root else {}), **({"deepspeed": "none"} if smoke else {})}
    # a smoke run writes only under its own root: a stage whose output_dir is set elsewhere is moved there
    smoke_root = parsed.vars.get("output_root", SMOKE_OUTPUT_ROOT) if smoke else None
    renderer = Renderer(recipe, layout, parsed, catalog, outputs_under=smoke_root)
    selected = selected_stages(recipe, args.stage, args.from_stage)
    for note in unused_stage_sets(args, [s.name for s in recipe.stages], selected):
        print(note, file=sys.stderr)
    rendered = renderer.render_all(selected)
    if smoke:
        for stage, (own, used) in renderer.moved.items():
            print(f"note: smoke: stage {stage} writes to {used}, not its own output_dir {own}", file=sys.stderr)
        # The model is built on first use; a dry run only names where it will be.
        model = default_cache_dir() / VERSION_TAG if args.dry_run else tiny_model_path()
        for stage, notes in apply_smoke(rendered, model, parsed.keys).items():
            for note in notes:
                print(f"note: smoke: stage {stage} runs without {note}", file=sys.stderr)
    plans, findings = [], []
    for r in rendered:
        plan, found = stages.plan(r, catalog, allow=set(args.allow), backend=getattr(args, "backend", None),
                                  overrides=parse_overrides(getattr(args, "engine", None)), nccl=args.nccl,
                                  smoke=parsed.keys if smoke else None)
        plans.append(plan)
        findings += found
    return plans, findings


def plan_json(plans: list[StagePlan], force: bool = False, command=None) -> list[dict]:
    problems, _ = dry_run.input_problems(plans, command)
    decisions = dry_run.outlooks(plans, force)
    return [
        {
            "stage": p.stage,
            "action": (decision := decisions[i]).action,
            "reason": decision.reason,
            "input_problems": [str(e) for stage, e in problems if stage == p.stage],
            "verb": p.rendered.verb,
            "output_dir": p.rendered.output_dir,
            "needs": p.rendered.needs,
            "files": [str(f) for f in p.files],
            "torchrun": p.torchrun,
            "nodes": [{"node_rank": c.node_rank, "host": c.host, "argv": list(c.argv), "env": c.env} for c in p.commands],
            "config": p.rendered.config,
            "engine": p.rendered.engine,
            "translations": p.rendered.translations,
            **({"backend": p.backend, "engine_config": p.engine_config} if hasattr(p, "backend") else {}),
            **({"ray": ray_json(p.ray)} if getattr(p, "ray", None) is not None else {}),
        }
        for i, p in enumerate(plans)
    ]


def ray_json(cluster) -> dict:
    """The Ray cluster a stage starts, head first: each node's `ray start --block` (foreground, for the run's life)."""
    return {"address": cluster.address, "accelerators": cluster.expected_accelerators,
            "nodes": [{"node_rank": r, "host": h, "argv": cluster.start_argv(r), "env": cluster.device_env}
                      for r, h in enumerate(cluster.hosts)]}


def stage_command(args):
    """`llf-recipes run ... --stage STAGE` with this run's other options (--smoke, --output-root, --set, ...)."""
    typed = list(getattr(args, "argv", None) or ["run", args.name])
    kept, skip = [], False
    for item in typed:
        if skip:
            skip = False
            continue
        if item in ("--stage", "--from"):
            skip = True
            continue
        if item.startswith(("--stage=", "--from=")) or item in ("--dry-run", "--json"):
            continue
        kept.append(item)
    return lambda stage: "llf-recipes " + shlex.join([*kept, "--stage", stage])


def print_input_check(plans: list[StagePlan], command=None) -> int:
    """What `run` checks before its first stage: the stages read have completed, the datasets are registered.
    Returns how many problems it printed."""
    problems, notes = dry_run.input_problems(plans, command)
    for note in notes:
        print(f"# {note}")
    if not problems:
        print("\n# inputs: earlier stages and datasets are in place")
        return 0
    print(f"\n# inputs: {len(problems)} problem(s) `run` would stop on:")
    for _stage, exc in problems:
        print("#   error: " + str(exc).replace("\n", "\n#     "))
    return len(problems)


def print_plan(plans: list[StagePlan], force: bool = False) -> None:
    layout = plans[0].rendered.layout
    print(f"# {plans[0].rendered.recipe.name}: {len(plans)} stage(s) on {layout.describe()} ({layout.source})")
    decisions = dry_run.outlooks(plans, force)
    for i, p in enumerate(plans, 1):
        reads = f", reads {', '.join(p.rendered.needs)}" if p.rendered.needs else ""
        if hasattr(p, "describe"):  # a grpo stage: every file in full, then Ray per node and the run; an llf stage
            what = getattr(p, "headline", None) or f"grpo with {p.backend}"
            print(f"\n[{i}/{len(plans)}] stage {p.stage}: {what} -> {p.rendered.output_dir}{reads}")
            decision = decisions[i - 1]
            print(f"  would {decision.action}: {decision.reason}")
            print("\n".join(p.describe()))
            continue
        print(f"\n[{i}/{len(plans)}] stage {p.stage}: llamafactory-cli {p.rendered.verb} -> {p.rendered.output_dir}{reads}")
        decision = decisions[i - 1]
        print(f"  would {decision.action}: {decision.reason}")
        if p.engine is not None:
            print(f"  engine {p.engine.name}: {p.engine.python} ({p.engine.source})")
        for note in p.rendered.translations:
            print(f"  translated {note}")
        for f in p.files:
            print(f"  write {f}")
        for c in p.commands:
            print(f"  node {c.node_rank} ({c.host}):")
            for k, v in c.env.items():
                print(f"    {k}={v}")
            print(f"    argv: {json.dumps(list(c.argv))}")


def main(args) -> int:
    catalog = catalog_from(args)
    plans, findings = build_plans(args, catalog)
    print_findings(findings)
    if errors(findings):
        print(f"not run: {len(errors(findings))} validation error(s)", file=sys.stderr)
        return 1
    # the stages run on this machine: its devices, packages and disk are the ones to check
    local = args.launcher in ("auto", "local") and all(
        len(p.commands) == 1 and p.commands[0].host in LOCAL_HOSTS for p in plans)
    if args.dry_run:
        if args.launcher == "slurm":  # the job script each stage would submit
            from llf_recipes.launchers.slurm import sbatch_script

            for p in plans:
                print(f"# stage {p.stage}: {p.config_path.parent / f'llf-{p.stage}.sbatch'}")
                print(sbatch_script(p, p.config_path.parent))
            return 0
        if args.json:
            planned = plan_json(plans, args.force, stage_command(args))
            print(json.dumps(planned, indent=2, ensure_ascii=False))
            found = sum(len(p["input_problems"]) for p in planned)
        else:
            print_plan(plans, args.force)
            found = print_input_check(plans, stage_command(args)) + print_machine_check(plans, local)
        return 1 if found else 0  # a script can gate on it: `run` would stop on what was listed
    names = {p.stage for p in plans}
    ensure_engines(plans, args.install_engines)
    if args.launcher != "print":
        preflight.raise_if_any(preflight.check_stages(plans, local=local))
    deferred = set()  # stages whose datasets an earlier stage of this run registers (pairs)
    for p in plans:
        check_inputs(p, names, stage_command(args))
        if not check_registered(p, names):
            deferred.add(p.stage)
        if hasattr(p, "check_nodes") and args.launcher not in ("print", "slurm"):  # the engine on every node
            p.check_nodes(args.ssh_config, local_only=args.launcher == "ray")
        ensure_master_port(p, explicit=args.master_port is not None)
    source = args.hostfile or (f"--gpus {args.gpus}" if args.gpus else ("smoke" if args.smoke else "default"))
    started = time.time()
    code = 0
    rerun = "llf-recipes " + shlex.join(getattr(args, "argv", None) or ["run", args.name])  # skips completed stages
    for i, p in enumerate(plans, 1):
        if p.stage in deferred:
            check_registered(p)  # registered by an earlier stage of this run: there now
        code = run_stage(p, lambda plan, log: execute(plan, log, args), force=args.force,
                         position=f"[{i}/{len(plans)}]", layout_source=source, rerun=rerun)
        if code != 0:
            break
    if args.launcher != "print":
        rows = summary.stage_rows([(p.stage, p.config_path.parent) for p in plans], started)
        print("\n".join(summary.render(plans[0].rendered.recipe.name, rows, time.time() - started, rerun,
                                       smoke=args.smoke)), flush=True)
    return code


def print_machine_check(plans: list[StagePlan], local: bool) -> int:
    """The dry run's last part: what `run` would refuse on this machine (or that the hosts are checked elsewhere).
    Returns how many problems it printed."""
    if not local:
        print("\n# machine: the stages run on other hosts; `llf-recipes doctor --hostfile FILE` checks them")
        return 0
    problems = preflight.check_stages(plans, local=True)
    if not problems:
        print("\n# machine: devices, packages and disk are ready for these stages")
        return 0
    print(f"\n# machine: {len(problems)} problem(s) `run` would stop on:")
    for p in problems:
        print("#   " + p.format().replace("\n", "\n#   "))
    return len(problems)


def execute(plan: StagePlan, log: Path, args) -> int | None:
    """Run one stage through the chosen launcher; None when `--launcher print` only printed its commands."""
    check_handoff(plan)  # again: an earlier stage of this run may have written the model directory
    options = LaunchOptions(args.launcher, args.ssh_config, getattr(args, "ray_address", None),
                            tuple(getattr(args, "sbatch", ()) or ()))
    return launch(plan, log, options)


def ensure_engines(plans: list[StagePlan], install: bool) -> None:
    """Every stage's engine is there before the first stage starts (or is installed now, with --install-engines)."""
    for p in plans:
        env = getattr(p, "engine", None)
        local = all(c.host in LOCAL_HOSTS for c in p.commands)
        if env is None or env.installed() or not local:  # other hosts: the launcher's preflight checks there
            continue
        if install and env.source == "not installed":
            from llf_recipes.engines.install import install as install_engine

            install_engine(env.engine, echo=lambda line: print(line, file=sys.stderr, flush=True))
            if env.installed():
                continue
        raise env.missing_error(p.stage)
    for p in plans:
        check_handoff(p)


def check_handoff(plan: StagePlan) -> None:
    """A model directory given to an engine of another transformers major must read the same there."""
    env = getattr(plan, "engine", None)
    model = plan.rendered.config.get("model_name_or_path")
    if env is not None and model:
        from llf_recipes.engines.handoff import check

        check(str(model), env.engine.transformers_major, env.name, plan.stage)

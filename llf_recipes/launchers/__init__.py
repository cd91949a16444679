"""Launchers: how a planned stage's per-node commands start. local, ssh (each node under the watchdog), ray (a cluster
the run owns, or one it attaches to), slurm (an sbatch job) and print share one contract: start every node's command,
write its output to a log per node, show the terminal only warnings, errors and their own lines (everything with
--verbose), stop every node on failure or Ctrl-C, and return the worst exit code (None when nothing ran: print). None
of them knows about stages beyond the plan's commands (launchers/command.py), nor imports the planning code above
them; a plan that needs a Ray cluster across its nodes carries it as `plan.ray`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from llf_recipes.errors import LlfError
from llf_recipes.hardware import LOCAL_HOSTS
from llf_recipes.launchers.command import LaunchPlan
from llf_recipes.launchers.local import execute_local

LAUNCHERS = ("auto", "local", "ssh", "print", "ray", "slurm")


@dataclass(frozen=True)
class LaunchOptions:
    launcher: str = "auto"
    ssh_config: str | None = None
    ray_address: str | None = None  # --launcher ray: attach here (else RAY_ADDRESS; else start one)
    sbatch_args: tuple[str, ...] = ()  # --launcher slurm: extra sbatch options (partition, time, account)
    dry_run: bool = False


def is_local(plan: LaunchPlan) -> bool:
    return len(plan.commands) == 1 and plan.commands[0].host in LOCAL_HOSTS


def execute(plan: LaunchPlan, log: Path, options: LaunchOptions) -> int | None:
    """Run one planned stage with the chosen launcher; its exit code, None when `print` only printed commands."""
    name = options.launcher
    cluster = getattr(plan, "ray", None)
    if name == "print":
        from llf_recipes.launchers.printer import print_commands

        print_commands(plan)
        return None
    if name == "slurm":
        from llf_recipes.launchers import slurm

        return slurm.execute(plan, log.parent, options)
    if name == "ray":
        return _execute_ray(plan, log, options)
    if cluster is not None and name in ("auto", "ssh"):
        from llf_recipes.launchers import ray

        cmd = plan.commands[0]
        return ray.execute_with_cluster(plan, log.parent, options.ssh_config, cluster, list(cmd.argv), dict(cmd.env))
    if name in ("auto", "local") and is_local(plan):
        code = execute_local(plan, log)
        if code not in (0, 130, 143):  # the other launchers name the failing node and show its lines themselves
            from llf_recipes.console import print_tail

            print_tail(log, f"stage {plan.stage}")
        return code
    if name == "local":
        raise LlfError(f"stage {plan.stage} spans {len(plan.commands)} node(s) or a remote host; --launcher local "
                       "cannot start it", fix="use --launcher ssh, slurm, print or ray")
    if name not in ("auto", "ssh"):
        raise LlfError(f"unknown launcher {name!r}", fix=f"use one of {', '.join(LAUNCHERS)}")
    from llf_recipes.launchers import ssh

    return ssh.execute(plan, log.parent, options.ssh_config)


def _execute_ray(plan: LaunchPlan, log: Path, options: LaunchOptions) -> int:
    from llf_recipes.launchers import ray

    cluster = getattr(plan, "ray", None)
    layout = plan.rendered.layout
    if cluster is not None:  # an engine that drives Ray itself (EasyR1): its main command is the driver
        cmd = plan.commands[0]
        argv, env, python = list(cmd.argv), dict(cmd.env), cluster.python
        nodes, accelerators, kind = len(cluster.hosts), cluster.expected_accelerators, cluster.accelerator
        hosts = cluster.hosts
    else:  # LLaMA-Factory's own Ray path
        argv, env = ray.llamafactory_driver(plan)
        python, nodes, hosts = sys.executable, 1, ()
        kind = "NPU" if layout.device == "npu" else "GPU"
        accelerators = 0 if layout.device == "cpu" else layout.world_size
    address = ray.ray_address(options.ray_address)
    if address:
        return ray.execute_attached(plan, log.parent, address, python, argv, env, nodes, accelerators, kind,
                                    hosts)
    if layout.nnodes == 1 and is_local(plan):  # Ray started by the driver itself, stopped with it by the watchdog
        from llf_recipes.launchers.jobs import NodeJob, run_jobs
        from llf_recipes.launchers.watchdog import watchdog_argv

        job = NodeJob(0, "ray driver", "[ray] ", watchdog_argv(argv), {**os.environ, **env},
                      log.parent / f"llf-{plan.stage}.ray.log")
        code, message = run_jobs([job], log, plan.stage)
        if code:
            print(f"error: stage {plan.stage}: {message}", file=sys.stderr, flush=True)
        return code
    cluster = cluster or ray.cluster_for_layout(layout, 6379, python)
    return ray.execute_with_cluster(plan, log.parent, options.ssh_config, cluster, argv, env)

"""--launcher print: the shell lines to run by hand (or from a scheduler's script), one per node, in the order they
must start."""

from __future__ import annotations

import os

from llf_recipes.launchers.command import LaunchPlan
from llf_recipes.launchers.local import resolve_program
from llf_recipes.launchers.ssh import shell_line


def print_commands(plan: LaunchPlan) -> None:
    cwd = os.getcwd()
    layout = plan.rendered.layout
    cluster = getattr(plan, "ray", None)
    if cluster is not None:
        print(f"# stage {plan.stage}: Ray on every node ({layout.describe()}), the head (node 0) FIRST, then the "
              "other nodes, then the run on node 0 once `ray status` lists them all")
        for rank, host in enumerate(cluster.hosts):
            when = "start first" if rank == 0 else "after the head is up"
            print(f"# node {rank}: {host} (Ray {'head' if rank == 0 else 'worker'}, {when})")
            print(shell_line(cluster.start_argv(rank, block=False), cluster.device_env, cwd))
        cmd = plan.commands[0]
        print(f"# node 0: {cmd.host} (the run, once Ray lists {len(cluster.hosts)} nodes)")
        print(shell_line(list(cmd.argv), {**cmd.env, "RAY_ADDRESS": cluster.address}, cwd))
        print(f"# afterwards, on every node: {cluster.ray} stop")
        return
    print(f"# stage {plan.stage}: run each line on its node ({layout.describe()}); node 0 first is not required")
    for cmd in plan.commands:
        argv = [resolve_program(cmd.argv[0]), *cmd.argv[1:]]
        print(f"# node {cmd.node_rank}: {cmd.host}")
        print(shell_line(argv, cmd.env, cwd))

"""--launcher local: a single-node stage's one command under the watchdog, its output to the log file and what the
terminal should see of it to the terminal. `stream` is also how other verbs run an engine program (export, serve)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from llf_recipes.launchers.command import LaunchPlan


def execute_local(plan: LaunchPlan, log_path: Path) -> int:
    """Run a single-node stage: its output to the log file, what the terminal should see of it to the terminal;
    Ctrl-C stops the whole process group."""
    (command,) = plan.commands
    return stream(command.argv, command.env, log_path)


def stream(argv: tuple[str, ...] | list[str], env: dict[str, str], log_path: Path, echo=None) -> int:
    """Run `argv` under the nodes' watchdog, its whole output to `log_path` and what the terminal should see of it
    through `echo` (default: warnings and errors only, everything with --verbose; see console.EngineEcho).

    The watchdog stops the command's whole process tree when its stdin closes, so it goes with this process even when
    this one is SIGKILLed; Ctrl-C (or any exception here) stops it the same way and returns 130.
    """
    from llf_recipes.console import EngineEcho
    from llf_recipes.launchers.watchdog import STOP_GRACE_S, watchdog_argv  # the one watchdog every launcher shares

    echo = echo or EngineEcho()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env}
    program = [resolve_program(argv[0]), *argv[1:]]
    full_env["PATH"] = engine_path(program[0], full_env.get("PATH", ""))
    argv = watchdog_argv(program)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, env=full_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                echo(line)
            return proc.wait()
        except KeyboardInterrupt:
            _stop_watched(proc, STOP_GRACE_S)
            return 130
        finally:
            if proc.poll() is None:
                _stop_watched(proc, STOP_GRACE_S)


def engine_path(program: str, path: str) -> str:
    """PATH with the program's own `bin/` first, so what it starts by name (LLaMA-Factory's `torchrun`) comes from
    the same environment, not from whichever environment is first on the caller's PATH."""
    if not os.path.isabs(program):
        return path
    own = os.path.dirname(program)
    return os.pathsep.join([own, *[p for p in path.split(os.pathsep) if p and p != own]])


def resolve_program(name: str) -> str:
    """A console script on PATH, else the one beside this interpreter (a virtualenv that is not activated)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def _stop_watched(proc, grace: float) -> None:
    """Closing the watchdog's stdin (and SIGTERM) makes it stop the tree, escalating to SIGKILL after `grace`."""
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.terminate()
        proc.wait(timeout=grace + 5)
    except (OSError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

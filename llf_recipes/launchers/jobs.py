"""What every launcher shares: node jobs started as processes here (a local watchdog, an ssh client, sbatch's
follower), their output streamed into a log per node and one combined log (lines prefixed with the node), and
all-or-nothing stop: when one fails, on Ctrl-C or SIGTERM, every other is stopped (stdin closed, so its watchdog ends
the node's tree; then SIGTERM; then SIGKILL). The exit code is the worst rank's.

The terminal gets what it gets of a single-node run: llf-recipes' own lines and the engines' warnings and errors (each
once, with the node's prefix), everything with --verbose; a closing line per node, and on failure the tail of the
failing node's log.

A run may have long-lived service jobs (a Ray node per host) beside its work: `Runner` starts them, waits for a
readiness check, runs the work, and stops the services when the work ends. A service that ends while the work still
runs is a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llf_recipes.console import EngineEcho, print_tail
from llf_recipes.errors import LlfError
from llf_recipes.launchers.watchdog import STOP_GRACE_S


@dataclass
class NodeJob:
    node_rank: int
    host: str
    label: str  # terminal prefix
    argv: list[str]
    env: dict[str, str] | None  # full environment for a local process; None = inherit (ssh)
    log_path: Path
    service: bool = False  # lives as long as the work (a Ray node); stopped when the work ends
    proc: subprocess.Popen | None = None
    code: int | None = None
    stopped: bool = False  # ended by us, not by itself
    reader: threading.Thread | None = field(default=None, repr=False)


class Terminated(Exception):
    """SIGTERM, turned into an exception in the main thread so the run stops its nodes like on Ctrl-C."""


class Runner:
    """Start jobs, stream their output, notice the first failure, stop them all."""

    def __init__(self, combined_log: Path):
        combined_log.parent.mkdir(parents=True, exist_ok=True)
        self.combined_log = combined_log
        self.combined = open(combined_log, "ab")  # noqa: SIM115 - closed in close()
        self.jobs: list[NodeJob] = []
        self.lock = threading.Lock()

    def _pump(self, job: NodeJob) -> None:
        prefix = job.label.encode()
        with open(job.log_path, "ab") as log:
            assert job.proc is not None and job.proc.stdout is not None
            echo = EngineEcho(prefix=job.label)
            for line in job.proc.stdout:
                log.write(line)
                log.flush()
                with self.lock:
                    echo(line)
                    self.combined.write(prefix + line)
                    self.combined.flush()

    def start(self, job: NodeJob) -> None:
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            job.proc = subprocess.Popen(job.argv, env=job.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise LlfError(f"node {job.node_rank} ({job.host}): cannot start {job.argv[0]}: {exc.strerror}",
                           fix=f"install {Path(job.argv[0]).name} here") from exc
        self.jobs.append(job)
        job.reader = threading.Thread(target=self._pump, args=(job,), daemon=True)
        job.reader.start()

    def collect(self, failed: list[NodeJob]) -> None:
        """Record every job that ended; a work job ending non-zero, or a service ending at all, is a failure."""
        for job in self.jobs:
            if job.code is None and job.proc is not None and job.proc.poll() is not None:
                job.code = job.proc.returncode
                if job.code != 0 or job.service:
                    failed.append(job)

    def wait(self, until: Callable[[], bool] | None = None, timeout: float | None = None) -> list[NodeJob]:
        """Block until `until()` holds (default: every work job ended well), one job failed (returned, first first)
        or `timeout` passed (returns [] with the condition unmet)."""
        work_done = lambda: all(j.code is not None for j in self.jobs if not j.service)
        until = until or work_done
        deadline = None if timeout is None else time.time() + timeout
        failed: list[NodeJob] = []
        while not failed:
            self.collect(failed)
            if failed or until() or (deadline is not None and time.time() > deadline):
                break
            time.sleep(0.2)
        if failed:
            # nodes failing within a moment of each other failed by themselves: name them all, not as "stopped"
            end = time.time() + 1.0
            while time.time() < end and any(j.code is None for j in self.jobs):
                time.sleep(0.1)
                self.collect(failed)
        return failed

    def stop(self, jobs: list[NodeJob] | None = None) -> None:
        """Close every running job's stdin (its watchdog then stops the node's tree), then SIGTERM, then SIGKILL."""
        jobs = self.jobs if jobs is None else jobs
        running = [j for j in jobs if j.proc is not None and j.proc.poll() is None]
        for job in running:
            job.stopped = True
            try:
                job.proc.stdin.close()
            except OSError:
                pass
        for sig, wait in ((None, STOP_GRACE_S + 5), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            running = [j for j in running if j.proc.poll() is None]
            if not running:
                break
            for job in running:
                if sig is not None:
                    try:
                        os.killpg(job.proc.pid, sig)
                    except ProcessLookupError:
                        pass
            deadline = time.time() + wait
            while time.time() < deadline and any(j.proc.poll() is None for j in running):
                time.sleep(0.1)
        for job in jobs:
            if job.proc is not None:
                if job.code is None:
                    job.code = job.proc.wait()
                if job.proc.stdin and not job.proc.stdin.closed:
                    try:
                        job.proc.stdin.close()
                    except OSError:
                        pass
            if job.reader is not None:
                job.reader.join(timeout=10)

    def close(self) -> None:
        self.combined.close()

    def outcome(self, failed: list[NodeJob], interrupted: int) -> tuple[int, str]:
        jobs = self.jobs
        if interrupted:
            return interrupted, (f"interrupted: stopped {len(jobs)} node(s); logs: "
                                 + ", ".join(str(j.log_path) for j in jobs))
        if not failed:
            return 0, ""
        # a node that ended by itself with an error while we were stopping the rest failed too
        failed += [j for j in jobs if j not in failed and not j.stopped and j.code not in (0, None)]
        lines = []
        for job in failed:
            if job.service and job.code == 0:
                why = "stopped by itself while the run still needed it"
            elif job.code == 255 and job.env is None:
                why = f"could not be reached or lost its ssh connection (exit code {job.code})"
            else:
                why = f"failed with exit code {job.code}"
            lines.append(f"node {job.node_rank} ({job.host}) {why}; log: {job.log_path}")
        stopped = [j for j in jobs if j.stopped]
        if stopped:
            lines.append("stopped: " + ", ".join(f"node {j.node_rank} ({j.host})" for j in stopped))
        lines.append(f"all nodes: {self.combined_log}")
        return failed[0].code or 1, "\n  ".join(lines)


Phase = Callable[[Runner], "list[NodeJob] | None"]


def run_phases(combined_log: Path, phases: list[Phase], stage: str | None = None) -> tuple[int, str]:
    """Run `phases` in order with one Runner; each starts jobs and waits, returning the failed jobs ([] or None =
    go on). Every job is stopped at the end, on the first failure, on Ctrl-C (130) or SIGTERM (143).
    Returns (exit code, message): 0 and "" when every work job succeeded. With `stage`, the terminal gets a closing
    line per node, and on failure the tail of the first failing node's log."""
    runner = Runner(combined_log)
    old_term = None
    if threading.current_thread() is threading.main_thread():
        def on_term(*_):
            raise Terminated
        old_term = signal.signal(signal.SIGTERM, on_term)
    interrupted, failed = 0, []
    try:
        try:
            for phase in phases:
                failed = phase(runner) or []
                if failed:
                    break
        except KeyboardInterrupt:
            interrupted = 130
        except Terminated:
            interrupted = 143
        finally:
            runner.stop()
        code, message = runner.outcome(failed, interrupted)
        if stage is not None:
            closing(stage, runner.jobs, failed, interrupted)
        return code, message
    finally:
        runner.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def closing(stage: str, jobs: list[NodeJob], failed: list[NodeJob], interrupted: int) -> None:
    """One line per node that ran the stage's work (how it ended, its log); the failing node's last lines."""
    work = [j for j in jobs if not j.service]
    if not work:
        return
    def ended(job: NodeJob) -> str:
        if job.stopped:
            return "stopped"
        return "finished" if job.code == 0 else f"exit code {job.code}"
    stream = sys.stderr if failed or interrupted else sys.stdout
    for job in work:
        print(f"stage {stage}: node {job.node_rank} ({job.host}) {ended(job)}, log {job.log_path}", file=stream, flush=True)
    if failed and not interrupted:  # a node that failed first may take the others down: each one's last lines
        for job in failed[:3]:
            print_tail(job.log_path, f"node {job.node_rank} ({job.host})")


def run_jobs(jobs: list[NodeJob], combined_log: Path, stage: str | None = None) -> tuple[int, str]:
    """Start every job, stream its output, stop them all when one fails or on Ctrl-C/SIGTERM."""

    def all_at_once(runner: Runner) -> list[NodeJob]:
        for job in jobs:
            runner.start(job)
        return runner.wait()

    return run_phases(combined_log, [all_at_once], stage)

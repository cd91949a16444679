"""Who owns a stage's output directory.

A stage runs under a lock file that only a live process can hold (an OS file lock, released by the kernel when its
holder dies), next to a small record of the holder: pid, the process's start time (pids are reused; the pair is not)
and host. A record found with the lock free is a stale lock: its holder ended without cleaning up, which is reported.
A trainer still running from such a holder (an orphan, writing into the same directory) is found by its command line
and refused by pid, since two trainers in one directory corrupt each other's checkpoints.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from llf_recipes.atomic import write_text
from llf_recipes.errors import LlfError

LOCK_NAME = ".llf-run.lock"
OWNER_NAME = ".llf-run.owner.json"


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None when it is not running."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return fields[19]


def alive(pid: int | None, start: str | None) -> bool:
    """The process `pid` that started at `start` still runs (False when the pid now belongs to another process)."""
    if not pid:
        return False
    if not Path("/proc").is_dir():  # no procfs: all we can say is whether the pid exists
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    now = process_start(int(pid))
    return now is not None and (start is None or now == start)


def me() -> dict[str, Any]:
    return {"pid": os.getpid(), "start": process_start(os.getpid()), "host": socket.gethostname()}


def owner_gone(owner: Any) -> bool:
    """A recorded owner on this host that is no longer running (an owner on another host cannot be checked)."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False
    return not alive(owner.get("pid"), owner.get("start"))


def processes_using(path: str | Path) -> list[tuple[int, str]]:
    """Live processes (not this one) whose command line names `path` (absolute, or relative to their cwd)."""
    target = str(Path(path).resolve())
    name = Path(path).name
    found = []
    if not Path("/proc").is_dir():
        return found
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            args = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        texts = [a.decode(errors="replace") for a in args if a]
        if not any(t.endswith(name) for t in texts) or process_start(int(d)) is None:
            continue
        try:
            cwd = os.readlink(f"/proc/{d}/cwd")
        except OSError:
            cwd = ""
        if any(os.path.normpath(os.path.join(cwd, t)) == target for t in texts if t.endswith(name)):
            found.append((int(d), " ".join(texts)[:160]))
    return sorted(found)


class StageLock:
    """Held while a stage runs in `run_dir`; `watch` is the file a trainer of this directory has on its command line."""

    def __init__(self, run_dir: Path, stage: str, watch: Path | None = None):
        self.run_dir = Path(run_dir)
        self.stage = stage
        self.watch = watch
        self._lock = FileLock(str(self.run_dir / LOCK_NAME))
        self.record = self.run_dir / OWNER_NAME

    def _recorded(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def acquire(self) -> None:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            owner = self._recorded() or {}
            who = f" (pid {owner['pid']} on {owner.get('host')})" if owner.get("pid") else ""
            raise LlfError(f"stage {self.stage} is already running in {self.run_dir}{who}",
                           where=str(self.run_dir / LOCK_NAME), fix="wait for it to finish, or stop it first") from None
        except OSError as exc:
            raise LlfError(f"cannot lock {self.run_dir / LOCK_NAME}: {exc.strerror or exc}",
                           where=str(self.run_dir / LOCK_NAME),
                           fix="the stage's output directory must be a writable directory") from None
        try:
            self._check_orphans()
            stale = self._recorded()
            if stale and stale.get("pid") != os.getpid():
                print(f"note: {self.run_dir / LOCK_NAME} was left by pid {stale.get('pid')} on {stale.get('host')}, "
                      "which ended without releasing it; taken over", file=sys.stderr)
            write_text(self.record, json.dumps(me()) + "\n")
        except BaseException:
            self._lock.release()
            raise

    def _check_orphans(self) -> None:
        if self.watch is None:
            return
        orphans = processes_using(self.watch)
        if orphans:
            pids = " ".join(str(p) for p, _ in orphans)
            raise LlfError(
                f"stage {self.stage}: a process from an earlier run still works in {self.run_dir}: pid {orphans[0][0]} "
                f"({orphans[0][1]})" + (f" and {len(orphans) - 1} more" if len(orphans) > 1 else ""),
                where=str(self.run_dir), fix=f"stop it (kill {pids}) or let it finish, then run again")

    def release(self) -> None:
        try:
            self.record.unlink(missing_ok=True)
        finally:
            self._lock.release()

    def __enter__(self) -> StageLock:  # noqa: PYI034 - a plain class, not meant to be subclassed
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

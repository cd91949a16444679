"""Honest records of a stage's attempts: a header in the log per attempt, and no manifest for an attempt that never
started (a launcher's own checks refused it, or it was stopped before its process began)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from llf_recipes import manifest

HEADER_MARK = "==== llf-recipes attempt"


def attempt_number(previous: dict[str, Any] | None) -> int:
    return int((previous or {}).get("attempt") or (1 if previous else 0)) + 1


def write_header(log: Path, attempt: int, command: str, current: dict[str, Any], reason: str) -> None:
    """Start an attempt's part of the log: attempt number, time, command, fingerprint. Earlier attempts stay above it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    datasets = ", ".join(f"{name} {str((d or {}).get('sha256') or (d or {}).get('source') or '-')[:12]}"
                         for name, d in (current.get("datasets") or {}).items())
    lines = [
        f"{HEADER_MARK} {attempt} · {time.strftime('%Y-%m-%d %H:%M:%S %z')} · {reason} ====",
        f"command: {command}",
        f"fingerprint: config {str(current.get('config_hash'))[:12]}" + (f"; data {datasets}" if datasets else ""),
        "",
    ]
    with open(log, "a", encoding="utf-8") as fh:
        if fh.tell() > 0:
            fh.write("\n")
        fh.write("\n".join(lines))


def attempts_in(log: Path) -> int:
    """How many attempt headers a log holds."""
    try:
        with open(log, encoding="utf-8", errors="replace") as fh:
            return sum(1 for line in fh if line.startswith(HEADER_MARK))
    except OSError:
        return 0


def refused(run_dir: Path, previous: dict[str, Any] | None, log: Path, why: str) -> None:
    """An attempt that never started: the log says so under its header, and the manifest it replaced comes back
    (or none stays, when there was none before)."""
    with contextlib.suppress(OSError), open(log, "a", encoding="utf-8") as fh:
        fh.write(f"not started: {why.splitlines()[0] if why else 'refused'}\n")
    if previous is not None:
        manifest.write(run_dir, previous)
    else:
        with contextlib.suppress(FileNotFoundError):
            manifest.path_for(run_dir).unlink()

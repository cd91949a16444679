"""The live progress of a running stage, read from the trainer's own log in its output directory.

LLaMA-Factory (and the TRL backend) append one JSON line per logging step to `trainer_log.jsonl` (current_steps,
total_steps, loss, lr, elapsed and remaining time); EasyR1 appends to `checkpoints/experiment_log.jsonl` (step and
nested metrics). Only lines written after the stage started count, so an earlier attempt's history is not shown as this one's.

On a terminal the display is one line per stage, redrawn in place (rich); elsewhere (a CI log, a pipe) a plain line
every minute and one when the stage ends.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

# LLaMA-Factory's and the TRL backend's, in the output directory; EasyR1's, in its checkpoint directory there.
LOG_NAMES = ("trainer_log.jsonl", "experiment_log.jsonl", "checkpoints/experiment_log.jsonl")
PLAIN_EVERY_S = 60.0


@dataclass
class Snapshot:
    """What the display shows of a stage: the latest logged step."""

    step: int = 0
    total: int | None = None
    loss: float | None = None
    lr: float | None = None
    remaining_s: float | None = None
    entries: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def update(self, entry: dict[str, Any]) -> None:
        self.entries += 1
        flat = flatten_keys(entry)
        step = flat.get("current_steps", flat.get("step"))
        if isinstance(step, (int, float)):
            self.step = int(step)
        total = flat.get("total_steps")
        if isinstance(total, (int, float)) and total > 0:
            self.total = int(total)
        loss = _first(flat, ("loss", "actor/pg_loss", "actor/loss", "train/loss"))
        if loss is not None:
            self.loss = loss
        lr = _first(flat, ("lr", "learning_rate", "actor/lr"))
        if lr is not None:
            self.lr = lr
        remaining = flat.get("remaining_time")
        if isinstance(remaining, str):
            self.remaining_s = _seconds(remaining)
        reward = _first(flat, ("reward", "reward/overall", "val/reward_score"))
        if reward is not None:
            self.extra["reward"] = reward


def flatten_keys(entry: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested logs as one level: {"reward": {"mean": 1}} -> {"reward/mean": 1}."""
    out: dict[str, Any] = {}
    for k, v in entry.items():
        if isinstance(v, dict):
            out.update(flatten_keys(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _first(flat: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for k in keys:
        v = flat.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _seconds(text: str) -> float | None:
    """`H:MM:SS` or `N day(s), H:MM:SS` (Python's timedelta as text) in seconds."""
    days = 0
    if "day" in text:
        head, _, text = text.partition(",")
        try:
            days = int(head.split()[0])
        except ValueError:
            return None
    try:
        h, m, s = (float(x) for x in text.strip().split(":"))
    except ValueError:
        return None
    return days * 86400 + h * 3600 + m * 60 + s


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TrainerLog:
    """New complete lines of a stage's trainer log, from the size it had when the stage started."""

    def __init__(self, run_dir: Path):
        self.paths = [Path(run_dir) / name for name in LOG_NAMES]
        self.offsets = {p: (p.stat().st_size if p.is_file() else 0) for p in self.paths}

    def poll(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for path in self.paths:
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if size < self.offsets[path]:  # truncated (a fresh run, overwrite_output_dir): read from the start
                self.offsets[path] = 0
            if size == self.offsets[path]:
                continue
            with open(path, "rb") as fh:
                fh.seek(self.offsets[path])
                data = fh.read(size - self.offsets[path])
            complete, _, _ = data.rpartition(b"\n")
            if not complete and not data.endswith(b"\n"):
                continue
            self.offsets[path] += len(complete) + 1
            for line in complete.split(b"\n"):
                try:
                    entry = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries


def describe(snap: Snapshot, elapsed: float) -> str:
    """The plain (non-terminal) progress line."""
    parts = [f"step {snap.step}/{snap.total}" if snap.total else ("starting" if not snap.entries else f"step {snap.step}")]
    if snap.loss is not None:
        parts.append(f"loss {snap.loss:.4g}")
    if snap.lr is not None:
        parts.append(f"lr {snap.lr:.2e}")
    parts.append(f"elapsed {clock(elapsed)}")
    if snap.remaining_s is not None and snap.total and snap.step < snap.total:
        parts.append(f"left {clock(snap.remaining_s)}")
    return ", ".join(parts)


class StageProgress:
    """A context that shows one stage's progress while its engine runs; `echo` prints a line above the display."""

    def __init__(self, run_dir: Path, label: str, total_hint: int | None = None, stream=None, interval: float = 0.5):
        self.log = TrainerLog(run_dir)
        self.label = label
        self.snap = Snapshot(total=total_hint if total_hint and total_hint > 0 else None)
        self.stream = stream or sys.stderr
        self.interval = interval
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = None
        self._progress = None
        self._task = None
        self._last_plain = self.started
        self._lock = threading.Lock()

    # -- the terminal display
    def _columns(self):
        from rich.progress import BarColumn, SpinnerColumn, TextColumn

        return (
            TextColumn("{task.description}"),
            SpinnerColumn(finished_text=" "),
            BarColumn(bar_width=16),
            TextColumn("{task.fields[steps]}"),
            TextColumn("{task.fields[metrics]}"),
            TextColumn("{task.fields[times]}"),
        )

    def _fields(self) -> dict[str, str]:
        snap = self.snap
        elapsed = time.time() - self.started
        steps = f"{snap.step}/{snap.total}" if snap.total else ("loading" if not snap.entries else str(snap.step))
        metrics = []
        if snap.loss is not None:
            metrics.append(f"loss {snap.loss:.4f}")
        if snap.lr is not None:
            metrics.append(f"lr {snap.lr:.1e}")
        times = clock(elapsed)
        if snap.total and snap.step < snap.total and snap.remaining_s is not None:
            times += f" left {clock(snap.remaining_s)}"
        return {"steps": steps, "metrics": " ".join(metrics), "times": times}

    def __enter__(self) -> Self:
        from rich.console import Console

        console = Console(file=self.stream)
        if console.is_terminal and not console.is_dumb_terminal:
            from rich.progress import Progress

            # print() while the display is up lands above it; stdout only when it is the same terminal (not a file)
            self._progress = Progress(*self._columns(), console=console, transient=False, auto_refresh=True,
                                      refresh_per_second=4, redirect_stdout=sys.stdout.isatty(), redirect_stderr=True)
            self._task = self._progress.add_task(self.label, total=self.snap.total, **self._fields())
            self._progress.start()
        self._thread = threading.Thread(target=self._watch, name="llf-progress", daemon=True)
        self._thread.start()
        return self

    def echo(self, line: str) -> None:
        """A line for the terminal (an engine warning): above the live display, or plainly."""
        with self._lock:
            if self._progress is not None:
                self._progress.console.print(line, markup=False, highlight=False, emoji=False)
            else:
                print(line, file=self.stream, flush=True)

    def _refresh(self) -> None:
        for entry in self.log.poll():
            self.snap.update(entry)
        with self._lock:
            if self._progress is not None:
                self._progress.update(self._task, total=self.snap.total, completed=self.snap.step, **self._fields())
            elif time.time() - self._last_plain >= PLAIN_EVERY_S:
                self._last_plain = time.time()
                print(f"{self.label}: {describe(self.snap, time.time() - self.started)}", file=self.stream, flush=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):
                self._refresh()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError):
            self._refresh()
        if self._progress is not None:
            self._progress.stop()
        elif self.snap.entries:
            print(f"{self.label}: {describe(self.snap, time.time() - self.started)}", file=self.stream, flush=True)

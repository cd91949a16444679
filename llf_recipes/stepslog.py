"""A verb's progress bar that, when the verb runs as a recipe stage, also appends the lines LLaMA-Factory's trainer
writes to trainer_log.jsonl (current_steps, total_steps, elapsed and remaining time), so the stage display of `run`
shows a generate or score stage as it shows a training stage. The stage names the file in $LLF_STEPS_LOG."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta

ENV = "LLF_STEPS_LOG"
EVERY_S = 1.0


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "call", initial: int = 0):
    """tqdm on stderr when enabled and stderr is a terminal (elsewhere a redrawn bar is only noise in a file); its
    updates also go to the stage's steps log when there is one, drawn or not."""
    from tqdm import tqdm

    path = os.environ.get(ENV)

    class Bar(tqdm):
        def update(self, n=1):
            shown = super().update(n)  # a disabled bar counts nothing: the log keeps its own count
            self.llf_done += n
            if path:
                _log(self, path)
            return shown

    drawn = enabled and sys.stderr.isatty()
    bar = Bar(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, disable=not drawn,
              dynamic_ncols=True)
    bar.llf_started, bar.llf_last, bar.llf_done = time.time(), 0.0, initial
    return bar


def _log(bar, path: str) -> None:
    now = time.time()
    if now - bar.llf_last < EVERY_S and bar.llf_done < (bar.total or 0):
        return
    bar.llf_last = now
    elapsed = now - bar.llf_started
    done, total = int(bar.llf_done), int(bar.total or 0)
    left = elapsed / done * (total - done) if done and total else 0.0
    entry = {"current_steps": done, "total_steps": total, "percentage": round(100 * done / total, 2) if total else None,
             "elapsed_time": str(timedelta(seconds=int(elapsed))), "remaining_time": str(timedelta(seconds=int(left)))}
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
    except OSError:
        pass  # the display is a courtesy: a full disk or a removed directory must not stop the work

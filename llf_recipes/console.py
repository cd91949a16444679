"""What the terminal shows of an engine's output.

The engine's output (LLaMA-Factory, transformers, TRL, EasyR1) goes to the stage's log in full. The terminal gets
llf-recipes' own lines, the engine's warnings and errors (each distinct one once), and the progress display; with
`--verbose` (or LLF_RECIPES_VERBOSE=1) it gets everything, as the engine prints it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections import deque
from pathlib import Path

# Set by `--verbose`; the environment variable carries the choice into child llf-recipes processes.
_VERBOSE = os.environ.get("LLF_RECIPES_VERBOSE", "").lower() in ("1", "true", "yes", "on")

# A line the terminal shows without --verbose: a logging record at WARNING or above (LLaMA-Factory's and
# transformers' `[WARNING|...]`, Python's `WARNING:name:`, glog's `W1130 12:00:00`), a Python warning or an error.
_SHOWN = re.compile(
    r"^\s*(?:\[(?:WARNING|WARN|ERROR|CRITICAL|FATAL)\b"
    r"|(?:WARNING|ERROR|CRITICAL|FATAL)[:\s]"
    r"|[WEF]\d{4} \d\d:\d\d:\d\d"
    r"|\S+:\d+: \w*Warning: "
    r"|\[\d{4}-\d\d-\d\d [^\]]*\] \[(?:WARNING|ERROR|CRITICAL)\]"
    r"|\w*(?:Error|Exception): "
    r"|Traceback \(most recent call last\))"
)
# Engine warnings the terminal leaves to the log because the config asked for what they warn about, on purpose.
_EXPECTED = (
    # LLaMA-Factory's data_utils, for every interleaved mix of map-style datasets: interleaving is how a mix gets
    # its ratio (interleave_probs, or one row from each in turn); concat only appends the datasets one after another.
    re.compile(r"We recommend using `mix_strategy=concat` in non-streaming mode"),
)
# A logging record as LLaMA-Factory (`[WARNING|time] name:line >> msg`) and transformers (`[WARNING|file:line] time >> msg`)
# print it; shown as `engine warning: msg`.
_RECORD = re.compile(r"^\[(?P<level>[A-Z]+)\|[^\]]*\](?: [\d:, -]+)? (?:\S+:\d+ )?>> (?P<msg>.*)$"
                     # DeepSpeed's: `[time] [WARNING] [file.py:213:function] msg`
                     r"|^\[\d{4}-[^\]]*\] \[(?P<level2>[A-Z]+)\] \[[^\]]*\] (?P<msg2>.*)$")
# Python's warnings module: `/path/file.py:559: UserWarning: msg`.
_PYWARNING = re.compile(r"^(?P<path>\S+\.py):(?P<line>\d+): (?P<cat>\w*Warning): (?P<msg>.*)$")
# Timestamps, pids, memory addresses and counters differ between repeats of the same warning.
_VARYING = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?|0x[0-9a-f]+|\b\d+\b")


# Where shown engine lines go while a progress display owns the terminal (None: stderr).
_SINK = None


@contextlib.contextmanager
def sink(write):
    """Send shown engine lines to `write` (the progress display's echo) inside this block."""
    global _SINK
    before, _SINK = _SINK, write
    try:
        yield
    finally:
        _SINK = before


# Distinct shown lines so far: a warning every stage repeats is shown once per command.
_SEEN: set[str] = set()


def tidy(line: str) -> str:
    """An engine's logging record without its timestamp and source position."""
    m = _PYWARNING.match(line)
    if m:
        return f"engine warning: {m.group('msg')} ({m.group('cat')}, {Path(m.group('path')).name}:{m.group('line')})"
    m = _RECORD.match(line)
    if m:
        level, msg = (m.group("level"), m.group("msg")) if m.group("level") else (m.group("level2"), m.group("msg2"))
        return f"engine {level.lower()}: {msg}"
    return line


def set_verbose(value: bool) -> None:
    global _VERBOSE
    _VERBOSE = value
    if value:
        os.environ["LLF_RECIPES_VERBOSE"] = "1"


def verbose() -> bool:
    return _VERBOSE


def is_shown(line: str) -> bool:
    """Whether a line of engine output reaches the terminal without --verbose."""
    return bool(_SHOWN.match(line)) and not any(p.search(line) for p in _EXPECTED)


class EngineEcho:
    """Receives the engine's output line by line and writes to the terminal what it should see.

    `write` is where shown lines go (default: stderr; the progress display passes its own, so lines land above it).
    """

    def __init__(self, write=None, verbose_mode: bool | None = None, prefix: str = ""):
        self.verbose = verbose() if verbose_mode is None else verbose_mode
        self._write = write
        self.prefix = prefix  # a node's label (`[node 1] `) on every line it shows; a repeat from another node is not shown
        self.shown = 0

    def __call__(self, raw: bytes) -> None:
        if self.verbose:
            sys.stdout.buffer.write(self.prefix.encode() + raw)
            sys.stdout.buffer.flush()
            return
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        # tqdm redraws a bar with carriage returns; only the last state of such a line matters, and it is progress.
        line = line.rsplit("\r", 1)[-1]
        if not is_shown(line):
            return
        line = tidy(line)
        key = _VARYING.sub("#", line.strip())
        if key in _SEEN:
            return
        _SEEN.add(key)
        self.shown += 1
        line = self.prefix + line
        write = self._write or _SINK
        if write is not None:
            write(line)
        else:
            print(line, file=sys.stderr, flush=True)


def shown_path(path: str | Path) -> str:
    """A path as the user would type it: relative to the current directory when under it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def tail(path: str | Path, lines: int = 20, max_bytes: int = 256 * 1024) -> list[str]:
    """The last `lines` lines of a log (reading at most its last `max_bytes`), carriage-return redraws collapsed."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    out: deque[str] = deque(maxlen=lines)
    for line in text.split("\n"):
        line = line.rstrip("\r").rsplit("\r", 1)[-1]
        if line.strip():
            out.append(line)
    return list(out)


def print_tail(log: str | Path, what: str, lines: int = 20, stream=None) -> None:
    """On failure: the engine's last lines, then where the whole log is. Nothing when the engine already streamed
    everything (--verbose)."""
    stream = stream or sys.stderr
    if verbose():
        print(f"{what}: full log {log}", file=stream)
        return
    last = tail(log, lines)
    if last:
        print(f"--- last {len(last)} lines of {log} ---", file=stream)
        for line in last:
            print(f"  {line}", file=stream)
        print("---", file=stream)
    print(f"{what}: full log {log}", file=stream, flush=True)


def engine_failure(log: str | Path, message: str, exc: BaseException, verb: str | None = None):
    """An engine's exception as one line to raise: its traceback appended to `log`, the log's tail shown for `verb`
    (when given), and an LlfError of `message` and the exception, naming the log. Call it inside the except block."""
    import traceback

    from llf_recipes.errors import LlfError

    with open(log, "a", encoding="utf-8") as fh:
        traceback.print_exc(file=fh)
    if verb is not None:
        print_tail(log, verb)
    return LlfError(f"{message}: {type(exc).__name__}: {exc}".splitlines()[0], where=str(log))


@contextlib.contextmanager
def output_to(log: str | Path):
    """Send everything this process writes to stdout and stderr (Python's and C libraries' alike, at the descriptor
    level) to `log` inside this block; with --verbose, leave the terminal as it is. Used where an engine runs in
    process: loading a model for `ask`, building the smoke model."""
    if verbose():
        yield
        return
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(log, "ab") as fh:
            os.dup2(fh.fileno(), 1)
            os.dup2(fh.fileno(), 2)
            try:
                yield
            finally:
                for s in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        s.flush()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)

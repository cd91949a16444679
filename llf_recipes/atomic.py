"""Files that matter are written to a temporary sibling and renamed into place: never half-written.

Several files that belong together (a train and a validation split) are committed together: each is written and
synced in full first, then a commit record naming every (temporary, destination) pair is written, then the renames
run back to back with Ctrl-C/SIGTERM held off, then the record goes. A writer killed between two renames leaves the
record, and the next writer of any of those destinations finishes the commit before it starts (`recover`). A
temporary's name carries its writer's pid, so one left by a dead writer is known as such and removed there too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

COMMIT_SUFFIX = ".commit.json"


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with open_atomic(path) as fh:
        fh.write(text.encode(encoding))
    return Path(path)


def _temporary(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _new_file_mode())  # mkstemp makes 0600; data files should read like any other file
    return fd, tmp


@contextmanager
def open_atomic(path: str | Path, buffering: int = 1 << 20) -> Iterator[BinaryIO]:
    """A binary file for streaming output: renamed onto `path` when the block completes, deleted if it raises."""
    path = Path(path)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "wb", buffering=buffering) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def open_together(paths: Sequence[Path | None], remove: Sequence[Path] = (),
                  buffering: int = 1 << 20) -> Iterator[list[BinaryIO | None]]:
    """Binary files (None where a path is None) that appear together or not at all; `remove` goes in the same commit
    (e.g. a rejects file an earlier run left that this run does not write)."""
    targets = [Path(p) if p is not None else None for p in paths]
    pairs: list[tuple[str, Path]] = []
    try:
        with ExitStack() as stack:
            handles: list[BinaryIO | None] = []
            for path in targets:
                if path is None:
                    handles.append(None)
                    continue
                fd, tmp = _temporary(path)
                pairs.append((tmp, path))
                handles.append(stack.enter_context(os.fdopen(fd, "wb", buffering=buffering)))
            yield handles
            for fh in handles:
                if fh is not None:
                    fh.flush()
                    os.fsync(fh.fileno())
        _commit(pairs, [Path(p) for p in remove if Path(p).exists()])
    except BaseException:
        for tmp, _ in pairs:
            Path(tmp).unlink(missing_ok=True)
        raise


def _record_path(first: Path) -> Path:
    return first.parent / f".{first.name}.{os.getpid()}{COMMIT_SUFFIX}"


def _commit(pairs: list[tuple[str, Path]], remove: list[Path]) -> None:
    if not pairs:
        return
    record = _record_path(pairs[0][1])
    body = {"rename": [[tmp, str(dest.absolute())] for tmp, dest in pairs], "remove": [str(p.absolute()) for p in remove]}
    with _signals_held():
        fd, tmp = _temporary(record)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(body, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, record)
        _fsync_dir(record.parent)
        _apply(body)
        record.unlink()


def _apply(body: dict) -> None:
    for tmp, dest in body.get("rename", []):
        if os.path.exists(tmp):
            os.replace(tmp, dest)
    for path in body.get("remove", []):
        Path(path).unlink(missing_ok=True)
    for d in {os.path.dirname(dest) for _, dest in body.get("rename", [])}:
        _fsync_dir(Path(d))


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends (only SIGKILL can split it, and `recover` mends that)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(paths: Sequence[Path | None]) -> tuple[int, int]:
    """Before writing `paths`: finish the commits a killed writer left for any of them, and remove the temporaries
    of writers that no longer run. Returns (commits finished, temporaries removed)."""
    targets = {Path(p).absolute() for p in paths if p is not None}
    finished = removed = 0
    for directory in {t.parent for t in targets}:
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            name = entry.name
            if not name.startswith(".") or not name.endswith((COMMIT_SUFFIX, ".tmp")):
                continue
            owner = _writer_pid(name)
            if owner is None or owner == os.getpid() or _pid_alive(owner):
                continue
            if name.endswith(COMMIT_SUFFIX):
                try:
                    body = json.loads(entry.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if isinstance(body, dict) and any(Path(d) in targets for _, d in body.get("rename", [])):
                    _apply(body)
                    entry.unlink(missing_ok=True)
                    finished += 1
    # temporaries after the commits: a finished commit has used its own
    for directory in {t.parent for t in targets}:
        if not directory.is_dir():
            continue
        names = {t.name for t in targets if t.parent == directory}
        for entry in directory.iterdir():
            name = entry.name
            if not name.endswith(".tmp") or not any(name.startswith(f".{n}.") for n in names):
                continue
            owner = _writer_pid(name)
            if owner is not None and owner != os.getpid() and not _pid_alive(owner):
                if entry.is_dir():  # a writer's scratch directory (clean --near-dedup's signatures)
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
    return finished, removed


def _writer_pid(name: str) -> int | None:
    """The pid in `.NAME.PID.XXXX.tmp` (ours), `.NAME.PID.tmp` or `.NAME.PID.commit.json`."""
    if name.endswith(COMMIT_SUFFIX):
        pid = name[: -len(COMMIT_SUFFIX)].rsplit(".", 1)[-1]
        return int(pid) if pid.isdigit() else None
    parts = name[: -len(".tmp")].split(".")
    for candidate in parts[-2:-1] + parts[-1:]:
        if candidate.isdigit():
            return int(candidate)
    return None


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask

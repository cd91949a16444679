"""Paths a verb reads or writes, checked before any work starts, so a wrong one is one line naming it and the fix."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from llf_recipes.errors import LlfError, from_os_error


def output_file(path: str | Path, key: str = "-o") -> Path:
    """A file the verb will create or replace: not a directory, and not under a file."""
    path = Path(path)
    if path.is_dir():
        raise LlfError(f"{path} is a directory", key=key, fix=f"give the path of a file, e.g. {path / 'out.jsonl'}")
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise LlfError(f"{parent} is a file, so {path} cannot be written under it", key=key,
                               fix="give a path whose directories are directories")
            break
    return path


def writable_dir(path: str | Path, key: str = "-o") -> Path:
    """A directory the verb will create (parents included) or write into: its nearest existing ancestor must be a
    directory this process can create entries in. Probed with a temporary directory that is removed at once, since
    permission bits do not tell (root, /proc, /sys, a read-only mount)."""
    import tempfile

    path = Path(path)
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is None:
        return path
    if not existing.is_dir():
        what = f"{path} is a file" if existing == path else f"{existing} is a file, so {path} cannot be created under it"
        raise LlfError(what, key=key, fix="give a directory path")
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".llf-probe-").cleanup()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise LlfError(f"{path} is not writable ({existing}: {why})", key=key,
                       fix="give a directory you can write to") from None
    return path


def directory(path: str | Path, key: str = "--data-dir") -> Path:
    """A directory the verb reads from or writes into (created later if missing): not a file."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise LlfError(f"{path} is a file, not a directory", key=key, fix=f"give a directory for {key}")
    return path


def input_file(path: str | Path, key: str | None = None) -> Path:
    """A file the verb reads: readable and not a loop of links (a missing one is left to the verb to explain)."""
    path = Path(path)
    try:
        if path.is_file():
            with open(path, "rb"):
                pass
        else:
            os.stat(path)
    except FileNotFoundError:
        return path  # each verb says how to get the file it wanted
    except OSError as exc:
        err = from_os_error(exc)
        if err is None:
            raise
        err.key = key
        raise err from None
    return path


def same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return False


def settle(outputs: list[Path | None]) -> None:
    """Before writing `outputs`: finish the commit a killed earlier writer left for them, remove its temporaries."""
    from llf_recipes.atomic import recover

    finished, removed = recover(outputs)
    first = next(p for p in outputs if p is not None)
    if finished:
        print(f"note: finished {finished} commit(s) an interrupted earlier run left for {first}", file=sys.stderr)
    if removed:
        print(f"note: removed {removed} temporary file(s) an earlier run that did not finish left beside {first}",
              file=sys.stderr)

"""Files that matter are written to a temporary sibling and renamed into place: never half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with open_atomic(path) as fh:
        fh.write(text.encode(encoding))
    return Path(path)


@contextmanager
def open_atomic(path: str | Path, buffering: int = 1 << 20) -> Iterator[BinaryIO]:
    """A binary file for streaming output: renamed onto `path` when the block completes, deleted if it raises.

    Several of these in one ExitStack commit together: a failure anywhere in the block leaves none of them behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _new_file_mode())  # mkstemp makes 0600; data files should read like any other file
        with os.fdopen(fd, "wb", buffering=buffering) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask

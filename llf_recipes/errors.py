"""The one error type every verb reports: what went wrong, where, and how to fix it."""

from __future__ import annotations


class LlfError(Exception):
    """A user-facing error. `key` and `where` locate it; `fix` says what to do."""

    def __init__(self, message: str, *, key: str | None = None, where: str | None = None, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.key = key
        self.where = where
        self.fix = fix

    def __str__(self) -> str:
        head = f"{self.where}: " if self.where else ""
        text = f"{head}{self.message}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


_OS_ERRORS = {
    # errno name: (what is wrong with the path, what to do)
    "EISDIR": ("is a directory, not a file", "give the path of a file (e.g. DIR/name.jsonl)"),
    "ENOTDIR": ("cannot be reached: a part of its path is a file, not a directory", "fix the path"),
    "EEXIST": ("already exists as a file, so it cannot be made a directory", "give a directory path, or move the file"),
    "EACCES": ("permission denied", "check its permissions (ls -l) and those of its directory"),
    "EPERM": ("operation not permitted", "check its permissions (ls -l) and those of its directory"),
    "ELOOP": ("is a loop of symbolic links", "point the link at a real file (ls -l shows where it points)"),
    "ENOENT": ("does not exist", "check the path"),
    "ENOSPC": ("no space left on the device", "free some space, or write elsewhere"),
    "EROFS": ("is on a read-only file system", "write elsewhere"),
    "ENAMETOOLONG": ("has a name that is too long", "use a shorter path"),
}


def from_os_error(exc: BaseException) -> LlfError | None:
    """A failure of the file system (or of reading nested input) as the one-line error a user can act on; None when
    `exc` is not such a failure."""
    import errno as errnos

    if isinstance(exc, RecursionError):
        return LlfError("the input is nested too deeply to read", fix="flatten the file's structure")
    if isinstance(exc, RuntimeError) and str(exc).startswith("Symlink loop from "):
        return LlfError(_OS_ERRORS["ELOOP"][0], where=str(exc).removeprefix("Symlink loop from ").strip("'\""),
                        fix=_OS_ERRORS["ELOOP"][1])
    if not isinstance(exc, OSError) or exc.errno is None:
        return None
    path = exc.filename2 if exc.filename2 is not None and exc.errno == errnos.EISDIR else exc.filename
    what, fix = _OS_ERRORS.get(errnos.errorcode.get(exc.errno, ""), (exc.strerror or str(exc), None))
    return LlfError(what, where=str(path) if path is not None else None, fix=fix)

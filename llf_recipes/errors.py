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

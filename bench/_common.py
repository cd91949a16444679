"""Shared by the benchmark scripts (run as `python bench/NAME.py`, so this directory is on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def program(name: str) -> str:
    """A console script beside this interpreter (an unactivated virtualenv), else the name for PATH lookup."""
    beside = BIN / name
    return str(beside) if beside.exists() else name

"""Jinja for recipes: sandboxed, bounded, and unable to turn a value into YAML syntax.

- Values are data. Every `{{ ... }}` output goes through `finalize`: numbers, booleans and null are written as YAML
  spells them; a string that YAML would read back as the same plain text is written as is; any other string (one
  with `#`, `: `, quotes, a newline, a leading `&` ...) is written as an opaque token and put back, character for
  character, into the parsed config (`restore`). So `--output-root '/tmp/runs #1'` or a model path with `: ` ends up
  in the config exactly as typed, and never adds, hides or changes a key.
- Rendering has a budget per stage: wall time (SIGALRM, where the main thread renders), memory (RLIMIT_AS raised by
  the budget over what the process uses, on Linux) and the size of `*` and `**` results, checked before they are
  computed. Exceeding one is an error naming the recipe and line, as is any other failure inside a template.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

TIME_BUDGET_S = float(os.environ.get("LLF_RENDER_TIME_S", "5"))
MEMORY_BUDGET = int(os.environ.get("LLF_RENDER_MEMORY_MB", "512")) << 20
MAX_SEQUENCE = 1_000_000  # characters or items a `*` may produce
MAX_POWER_BITS = 1_000_000  # bits a `**` may produce

# A string YAML reads back as itself when written plain in a block mapping or sequence.
_PLAIN = re.compile(r"[\w./+=~@%-][\w./+=~@%-]*(?: [\w./+=~@%-]+)*")
_PLAIN_START = re.compile(r"[\w./+]")
_TOKEN = "llfv{nonce}x{index}x"


class BudgetExceeded(Exception):
    pass


class RecipeEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE:
                    raise SecurityError(f"`*` would make {len(seq) * n:,} items (the limit is {MAX_SEQUENCE:,})")
        if (operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0
                and left.bit_length() * right > MAX_POWER_BITS):
            raise SecurityError(f"`**` would make a number of about {left.bit_length() * right:,} bits")
        return super().call_binop(context, operator, left, right)


class ValueSlots:
    """The strings `finalize` kept out of the YAML text, by token; `restore` puts them back into the parsed config."""

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(4)
        self.values: dict[str, str] = {}

    def finalize(self, value: Any) -> Any:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, (list, tuple, dict)):
            return self.finalize_text(json.dumps(value, ensure_ascii=False, default=str))
        return self.finalize_text(str(value))

    def finalize_text(self, text: str) -> str:
        if not text or (_PLAIN.fullmatch(text) and _PLAIN_START.match(text)) or text.startswith("[") and _flow_json(text):
            return text
        token = _TOKEN.format(nonce=self.nonce, index=len(self.values))
        self.values[token] = text
        return token

    def restore(self, data: Any) -> Any:
        if not self.values:
            return data
        if isinstance(data, str):
            if data in self.values:
                return self.values[data]
            if self.nonce in data:
                return re.sub(rf"llfv{self.nonce}x\d+x", lambda m: self.values.get(m.group(0), m.group(0)), data)
            return data
        if isinstance(data, dict):
            return {self.restore(k): self.restore(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.restore(v) for v in data]
        return data


def _flow_json(text: str) -> bool:
    """A JSON list (how `finalize` writes a list) is valid YAML flow and reads back the same."""
    try:
        return isinstance(json.loads(text), list)
    except ValueError:
        return False


_current = threading.local()


def _finalize(value: Any) -> Any:
    return _current.slots.finalize(value)


_ENV = RecipeEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, finalize=_finalize)


@functools.lru_cache(maxsize=512)
def _compiled(source: str):
    return _ENV.from_string(source)


def render(source: str, context: dict[str, Any], slots: ValueSlots) -> str:
    """Render `source` (compiled once per process) with `slots` catching the strings that are not plain YAML."""
    previous = getattr(_current, "slots", None)
    _current.slots = slots
    try:
        return _compiled(source).render(context)
    finally:
        _current.slots = previous


_active = threading.local()


@contextmanager
def budget(seconds: float | None = None, memory: int | None = None) -> Iterator[None]:
    """Raise BudgetExceeded after `seconds`, MemoryError past `memory` more bytes of address space. A stage that
    renders an earlier one (stage_output) spends its own budget: the outermost one counts."""
    if getattr(_active, "on", False):
        yield
        return
    _active.on = True
    try:
        with _time_limit(TIME_BUDGET_S if seconds is None else seconds), \
                _memory_limit(MEMORY_BUDGET if memory is None else memory):
            yield
    finally:
        _active.on = False


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    if seconds <= 0 or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def overrun(*_):
        raise BudgetExceeded(f"rendering took longer than its budget of {seconds:g} s")

    old = signal.signal(signal.SIGALRM, overrun)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def _memory_limit(extra: int) -> Iterator[None]:
    try:
        import resource

        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        yield
        return
    limit = used + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY and soft <= limit:
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

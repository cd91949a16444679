"""`llf-recipes`: a thin dispatcher over one module per verb."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from llf_recipes import __version__
from llf_recipes.errors import LlfError, from_os_error

# verb -> module under llf_recipes.cli; each module has `add_parser(subparsers)` and `main(args) -> int`.
VERBS = {
    "list": "ls",
    "show": "show",
    "cp": "cp",
    "render": "render",
    "validate": "validate",
    "schema": "schema",
    "run": "run",
    "register": "register",
    "download": "download",
    "prepare": "prepare",
    "convert": "convert",
    "clean": "clean",
    "check": "check",
    "select": "select",
    "doctor": "doctor",
    "export": "export",
    "ask": "ask",
    "chat": "chat",
    "serve": "serve",
    "generate": "generate",
    "judge": "judge",
    "score": "score",
    "pairs": "pairs",
    "eval": "eval",
    "bench": "benchmark",
    "report": "report",
    "merge": "merge",
    "engine": "engine",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that verb's subparser, so a command imports no other verb's module."""
    parser = argparse.ArgumentParser(
        prog="llf-recipes",
        description="Reproducible LLaMA-Factory fine-tuning: recipes rendered for your hardware, validated, run.",
        epilog="Run `llf-recipes VERB --help` for a verb's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"llf-recipes {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, module in VERBS.items():
        if only is None or verb == only:
            importlib.import_module(f"llf_recipes.cli.{module}").add_parser(sub)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # A scheduler's or `kill`'s SIGTERM stops a command as Ctrl-C does: children are stopped, files left whole.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    first = argv[0] if argv else None
    args = build_parser(first if first in VERBS else None).parse_args(argv)
    args.argv = list(argv)  # as typed, for the commands a verb suggests next
    if getattr(args, "verbose", False):
        from llf_recipes.console import set_verbose

        set_verbose(True)
    try:
        return int(args.func(args) or 0)
    except LlfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `llf-recipes render ... | head`
        return 0
    except (OSError, RecursionError, RuntimeError) as exc:  # a path that cannot be read or written, as one line
        described = from_os_error(exc)
        if described is None:
            raise
        print(f"error: {described}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""How every verb's parser looks. Light on purpose: a verb that needs no catalog imports only this."""

from __future__ import annotations

import argparse
import textwrap

from llf_recipes.hardware import is_index


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def add_verb(sub, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=formatter,
    )
    p.add_argument("-v", "--verbose", action="store_true",
                   help="stream the engine's whole output to the terminal (it always goes to the log file)")
    return p


def add_alias(p: argparse.ArgumentParser, *old: str, dest: str, **kwargs) -> None:
    """An earlier spelling of an option, still accepted for one release and hidden from --help: it sets `dest` like
    the current option and leaves the current option's default alone when it is not given."""
    p.add_argument(*old, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


DEVICES = ("auto", "cuda", "npu", "cpu")


def device_type(with_index: bool):
    """`--device` in every verb: auto, cuda, npu or cpu; where the work runs in this process (eval, merge) also one
    device by index, cuda:N or npu:N."""

    def parse(value: str) -> str:
        kind, _, index = value.partition(":")
        if kind in DEVICES and (not index or (with_index and kind in ("cuda", "npu") and is_index(index))):
            return value
        allowed = ", ".join(DEVICES) + (", cuda:N, npu:N" if with_index else "")
        raise argparse.ArgumentTypeError(f"{value!r} is not a device (use {allowed})")

    return parse

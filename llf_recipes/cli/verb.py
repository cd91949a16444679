"""How every verb's parser looks. Light on purpose: a verb that needs no catalog imports only this."""

from __future__ import annotations

import argparse
import textwrap


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

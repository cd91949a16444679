"""An 80-column terminal: tables keep every name whole and fit the width."""

from __future__ import annotations

import re

from conftest import run_cli_subprocess

from llf_recipes.catalog import Catalog

NARROW = {"COLUMNS": "80", "TTY_COMPATIBLE": "1", "NO_COLOR": "1"}  # rich then treats the pipe as an 80-column terminal


def test_list_at_80_columns_keeps_names_whole(catalog: Catalog):
    for flag, names in ((None, catalog.recipe_names()), ("--datasets", list(catalog.datasets)),
                        ("--hostfiles", list(catalog.hostfile_paths))):
        proc = run_cli_subprocess("list", *([flag] if flag else []), env=NARROW)
        assert proc.returncode == 0, proc.stderr
        lines = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout).splitlines()
        assert max(len(line.rstrip()) for line in lines) <= 80, "\n".join(lines)
        starts = [line.split()[0] for line in lines[1:] if line and not line[0].isspace()]
        assert starts == names, "\n".join(lines)
        known = set(catalog.recipe_names()) | set(catalog.datasets)
        broken = [t for t in re.findall(r"[\w.-]+", "\n".join(lines))
                  if t not in known and len(t) >= 6 and any(n.startswith(t) for n in known)]
        assert not broken, "\n".join(lines)

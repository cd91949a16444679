"""`clean --val-out` writes two files that belong together: a kill between their renames never leaves a new split
beside an old one, and what a killed writer left behind is finished or removed by the next `clean`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, run_cli_subprocess

# Runs `llf-recipes clean` with os.replace/os.rename wrapped: right after the first rename onto one of the named
# destinations the process SIGKILLs itself, which is the worst moment a kill can hit a two-file commit.
KILL_AFTER_FIRST_RENAME = r"""
import os, signal, sys
targets = set(os.path.abspath(p) for p in sys.argv[1].split(os.pathsep))
real_replace, real_rename = os.replace, os.rename
def wrap(real):
    def move(src, dst, *a, **k):
        real(src, dst, *a, **k)
        if os.path.abspath(os.fspath(dst)) in targets:
            os.kill(os.getpid(), signal.SIGKILL)
    return move
os.replace, os.rename = wrap(real_replace), wrap(real_rename)
from llf_recipes.cli import main
sys.exit(main(sys.argv[2:]))
"""


def rows(n: int, tag: str) -> str:
    return "".join(json.dumps({"id": i, "text": f"{tag}-{i}"}) + "\n" for i in range(n))


def tags(path: Path) -> set[str]:
    return {json.loads(line)["text"].split("-")[0] for line in path.read_text().splitlines()} if path.exists() else set()


def clean_args(src: Path, train: Path, val: Path) -> list[str]:
    return ["clean", str(src), "-o", str(train), "--val-ratio", "0.3", "--val-out", str(val), "--seed", "1"]


def test_a_kill_between_the_two_renames_never_leaves_a_new_split_beside_an_old_one(tmp_path):
    src, train, val = tmp_path / "raw.jsonl", tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    src.write_text(rows(400, "old"))
    first = run_cli_subprocess(*clean_args(src, train, val))
    assert first.returncode == 0, first.stderr
    assert tags(train) == {"old"} and tags(val) == {"old"}

    src.write_text(rows(400, "new"))
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_RENAME, os.pathsep.join([str(train), str(val)]),
                             *clean_args(src, train, val)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr
    # Whatever the next `clean` is asked to do (here: an input that does not exist, so it writes nothing new), it
    # first settles what the killed one left: both files new, or both old, and no temporary behind.
    again = run_cli_subprocess(*clean_args(tmp_path / "missing.jsonl", train, val))
    assert again.returncode != 0 and "missing.jsonl" in again.stderr
    assert (tags(train), tags(val)) in [({"old"}, {"old"}), ({"new"}, {"new"})]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.jsonl", "train.jsonl", "val.jsonl"]


def test_stray_temporaries_of_a_dead_writer_are_removed_by_the_next_clean(tmp_path):
    src, out = tmp_path / "raw.jsonl", tmp_path / "out.jsonl"
    src.write_text(rows(50, "a"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    pid = int(dead.stdout)  # a process that has ended: nobody writes under its name any more
    stray = tmp_path / f".out.jsonl.{pid}.abc123.tmp"
    stray.write_text("half a file")
    live = tmp_path / f".out.jsonl.{os.getpid()}.def456.tmp"  # a live writer's temporary is left alone
    live.write_text("being written")
    proc = run_cli_subprocess("clean", str(src), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert not stray.exists() and live.exists()
    assert "removed 1 temporary file" in proc.stderr

"""Checkpoint identity: a checkpoint belongs to the run that wrote it.

Every attempt at a stage has an identity (the digest of its fingerprint: config, data, upstream stages) and a lineage
(`lineage`: new for a fresh start, carried over by a resume). A checkpoint directory gets a small stamp file naming
both. A stage resumes only from checkpoints stamped with its own identity and the lineage it continues; anything else
in its output directory (an older config's or data's checkpoints, those of an abandoned --force, unstamped ones) is
moved aside into `superseded-<time>/` before the trainer starts, so neither we nor the trainer can pick it up.

The stamp is written when an attempt ends; an attempt killed before that leaves its checkpoints unstamped, and the
next start stamps them with the identity its manifest recorded (`claim`). Trainers with other checkpoint names
(EasyR1's `global_step_N`) pass their own `pattern`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llf_recipes.atomic import write_text

STAMP = "llf-checkpoint.json"
HF_PATTERN = re.compile(r"^checkpoint-(\d+)$")  # transformers' Trainer, LLaMA-Factory, TRL
COMPLETE_MARKER = "trainer_state.json"  # the last file the Trainer writes into a checkpoint


def identity_of(parts: dict[str, Any]) -> str:
    """A digest of what makes two runs the same computation (the caller decides what goes in)."""
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def new_lineage() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def found(run_dir: str | Path, pattern: re.Pattern[str] = HF_PATTERN) -> list[tuple[int, Path]]:
    """Every checkpoint directory directly under `run_dir`, complete or not, by step."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    out = []
    for child in run_dir.iterdir():
        m = pattern.match(child.name)
        if m and child.is_dir():
            out.append((int(m.group(1)), child))
    return sorted(out)


def stamp_of(checkpoint: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((checkpoint / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stamp(checkpoint: Path, identity: str, lineage: str) -> None:
    write_text(checkpoint / STAMP, json.dumps({"identity": identity, "lineage": lineage}) + "\n")


def claim(run_dir: str | Path, identity: str | None, lineage: str | None,
          pattern: re.Pattern[str] = HF_PATTERN) -> list[Path]:
    """Stamp the unstamped checkpoints with the attempt that wrote them (the last one recorded); returns them."""
    if not identity or not lineage:
        return []
    claimed = []
    for _, checkpoint in found(run_dir, pattern):
        if stamp_of(checkpoint) is None:
            stamp(checkpoint, identity, lineage)
            claimed.append(checkpoint)
    return claimed


def is_complete(checkpoint: Path, marker: str = COMPLETE_MARKER) -> bool:
    return (checkpoint / marker).is_file()


def latest(run_dir: str | Path, identity: str, lineage: str | None, pattern: re.Pattern[str] = HF_PATTERN,
           marker: str = COMPLETE_MARKER) -> Path | None:
    """The newest complete checkpoint that `identity` and lineage `lineage` wrote, if any."""
    if not lineage:
        return None
    best = None
    for _, checkpoint in found(run_dir, pattern):
        s = stamp_of(checkpoint) or {}
        if s.get("identity") == identity and s.get("lineage") == lineage and is_complete(checkpoint, marker):
            best = checkpoint
    return best


@dataclass
class SetAside:
    moved: list[Path] = field(default_factory=list)
    to: Path | None = None

    def describe(self, run_dir: Path) -> str:
        if not self.moved:
            return ""
        names = ", ".join(p.name for p in self.moved[:4]) + (" ..." if len(self.moved) > 4 else "")
        return (f"{len(self.moved)} checkpoint(s) of an earlier attempt with another config, data or start ({names}) "
                f"moved aside to {self.to}; delete it when you no longer need them")


def set_aside(run_dir: str | Path, keep: tuple[str, str] | None, pattern: re.Pattern[str] = HF_PATTERN,
              marker: str = COMPLETE_MARKER) -> SetAside:
    """Move every checkpoint that is not a complete one of `keep` (identity, lineage) into `superseded-<time>/`."""
    run_dir = Path(run_dir)
    stale = []
    for _, checkpoint in found(run_dir, pattern):
        s = stamp_of(checkpoint) or {}
        mine = keep is not None and (s.get("identity"), s.get("lineage")) == keep and is_complete(checkpoint, marker)
        if not mine:
            stale.append(checkpoint)
    result = SetAside()
    if not stale:
        return result
    base = run_dir / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}"
    dest, n = base, 1
    while dest.exists():
        n += 1
        dest = base.with_name(f"{base.name}-{n}")
    dest.mkdir()
    for checkpoint in stale:
        shutil.move(str(checkpoint), str(dest / checkpoint.name))
        result.moved.append(checkpoint)
    result.to = dest
    return result

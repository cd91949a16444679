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

import fnmatch
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
           marker: str = COMPLETE_MARKER, unstamped: tuple[str | None, str | None] | None = None) -> Path | None:
    """The newest complete checkpoint that `identity` and lineage `lineage` wrote, if any. `unstamped`: the (identity,
    lineage) an unstamped checkpoint is taken to have, as `claim` would stamp it (a prediction that writes nothing)."""
    if not lineage:
        return None
    best = None
    for _, checkpoint in found(run_dir, pattern):
        s = stamp_of(checkpoint)
        if s is None and unstamped is not None:
            s = {"identity": unstamped[0], "lineage": unstamped[1]}
        s = s or {}
        if s.get("identity") == identity and s.get("lineage") == lineage and is_complete(checkpoint, marker):
            best = checkpoint
    return best


# What the Trainer (and LLaMA-Factory after it) writes into the output directory when a run ends: the model or adapter,
# its tokenizer, the figures and plots. A new attempt moves an earlier run's aside, or loading the directory would get
# the old model next to the new attempt's checkpoints.
FINAL_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_config.json", "model.safetensors",
               "model-*-of-*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
               "pytorch_model.bin.index.json", "value_head.safetensors", "value_head.bin", "config.json",
               "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
               "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja",
               "chat_template.json", "processor_config.json", "preprocessor_config.json", "README.md",
               "training_args.bin", "train_results.json", "eval_results.json", "all_results.json",
               "trainer_state.json", "training_*.png")


def final_files(run_dir: str | Path) -> list[Path]:
    """The files a finished run left directly in `run_dir` (FINAL_FILES), the model first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    order = {}
    for path in run_dir.iterdir():
        rank = next((i for i, f in enumerate(FINAL_FILES) if fnmatch.fnmatch(path.name, f)), None)
        if rank is not None and path.is_file():
            order[path] = (rank, path.name)
    return sorted(order, key=order.__getitem__)


@dataclass
class SetAside:
    moved: list[Path] = field(default_factory=list)
    to: Path | None = None
    finals: list[Path] = field(default_factory=list)

    def describe(self, run_dir: Path) -> str:
        if not self.moved and not self.finals:
            return ""
        what = []
        if self.moved:
            names = ", ".join(p.name for p in self.moved[:4]) + (" ..." if len(self.moved) > 4 else "")
            what.append(f"{len(self.moved)} checkpoint(s) of an earlier attempt with another config, data or start "
                        f"({names})")
        if self.finals:
            names = ", ".join(p.name for p in self.finals[:3]) + (" ..." if len(self.finals) > 3 else "")
            what.append(f"the model and figures an earlier run finished with ({names})")
        return f"{' and '.join(what)} moved aside to {self.to}; delete it when you no longer need them"


def set_aside(run_dir: str | Path, keep: tuple[str, str] | None, pattern: re.Pattern[str] = HF_PATTERN,
              marker: str = COMPLETE_MARKER, finals: bool = False) -> SetAside:
    """Move every checkpoint that is not a complete one of `keep` (identity, lineage) into `superseded-<time>/`, and
    with `finals` the files an earlier run finished with (`final_files`): the attempt starting now writes its own."""
    run_dir = Path(run_dir)
    stale = []
    for _, checkpoint in found(run_dir, pattern):
        s = stamp_of(checkpoint) or {}
        mine = keep is not None and (s.get("identity"), s.get("lineage")) == keep and is_complete(checkpoint, marker)
        if not mine:
            stale.append(checkpoint)
    result = SetAside()
    old_finals = final_files(run_dir) if finals else []
    if not stale and not old_finals:
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
    for path in old_finals:
        shutil.move(str(path), str(dest / path.name))
        result.finals.append(path)
    result.to = dest
    return result

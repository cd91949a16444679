"""Engines: the named, versioned environments that run stages, and what the program knows about each.

An engine is an interpreter with its `bin/` (the environment llf-recipes runs in, one built from a lock file shipped
here, or one the user points at), the LLaMA-Factory argument snapshot its configs are validated against, the key
translations from the recipes' dialect (written for the main LLaMA-Factory) to its own, and the packages whose
versions a run records. A stage names its engine (`engine:` in the recipe's stage list) or gets its stage's default:
`ppo` runs on `llamafactory-ppo`, a grpo stage on its backend (`trl` or `easyr1`), everything else on `llamafactory`.

This module only describes engines; it imports nothing heavy, so planning verbs stay fast. Where an engine lives and
how its versions are read: `engines.env`; building one from its lock: `engines.install`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llf_recipes.engines.translate import Translation, warmup_steps_as_ratio
from llf_recipes.errors import LlfError
from llf_recipes.suggest import nearest

LOCK_DIR = Path(__file__).resolve().parent / "locks"
MAIN = "llamafactory"


@dataclass(frozen=True)
class Engine:
    name: str
    summary: str
    packages: tuple[str, ...]  # distributions whose versions are read, recorded and checked
    imports: tuple[str, ...]  # modules `engine check` imports in the engine's interpreter
    lock: str | None = None  # a lock file under engines/locks/; None: llf-recipes' own environment (the train extra)
    snapshot: str | None = None  # LLaMA-Factory version whose argument snapshot validates this engine's configs
    program: str | None = "llamafactory-cli"  # console script the stage runs; None: `python -m ...` (grpo)
    transformers_major: int = 5
    translations: tuple[Translation, ...] = ()
    gpu_only: tuple[str, ...] = ()  # packages that need NVIDIA GPUs: absent on CPU machines, and `check` says so
    refuses: dict[str, str] = field(default_factory=dict)  # LLaMA-Factory stage -> why this engine cannot run it
    legacy_env: str | None = None  # an older variable naming the interpreter (still honoured)
    planner: str = "llamafactory"  # how its stages are checked and planned (engines/stages.py)
    source_repo: str | None = None  # not on a package registry: `engine install NAME --source` a checkout of this

    @property
    def lock_path(self) -> Path | None:
        return LOCK_DIR / self.lock if self.lock else None

    @property
    def in_main_environment(self) -> bool:
        """Runs in llf-recipes' own interpreter unless pointed elsewhere."""
        return self.lock is None and self.legacy_env is None

    def install_fix(self, python: str | Path | None = None) -> str:
        """How to get this engine's packages: the train extra for llf-recipes' own environment; for an engine with a
        lock, `engine install` (which builds its environment from the lock: the versions it needs, not the main
        extra's), or the lock itself for an interpreter named with --engine NAME=PYTHON."""
        if self.lock is None:
            where = f" for {python}" if python else ""
            return f'pip install -e ".[train]"{where} (or pip install "llf-recipes[train]")'
        source = f" --source CHECKOUT (git clone {self.source_repo})" if self.source_repo else ""
        pins = self.locked_versions()
        pinned = ", ".join(f"{p} {pins[p]}" for p in self.packages[:3] if p in pins)
        return (f"llf-recipes engine install {self.name}{source} builds its own environment from its lock"
                + (f" ({pinned})" if pinned else "") + f"; for an interpreter of yours: pip install -r {self.lock_path}")

    def locked_versions(self) -> dict[str, str]:
        """`name==version` lines of the lock (names normalised), {} for an engine without one."""
        path = self.lock_path
        if path is None or not path.is_file():
            return {}
        out: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            spec = line.split("#", 1)[0].strip()
            if "==" in spec:
                name, _, version = spec.partition("==")
                out[normalise(name.split("[")[0])] = version.split(";")[0].strip()
        return out

    def translate(self, config: dict[str, Any]) -> list[str]:
        """Rewrite `config` in place into this engine's dialect; one line per change (idempotent)."""
        notes: list[str] = []
        for translation in self.translations:
            note = translation(config)
            if note:
                notes.append(note)
        return notes


def normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


_LF_PACKAGES = ("llamafactory", "transformers", "trl", "peft", "torch", "datasets", "accelerate", "deepspeed",
                "bitsandbytes")

ENGINES: dict[str, Engine] = {e.name: e for e in (
    Engine(
        MAIN, "LLaMA-Factory 0.9.5 with trl 0.24 and transformers 5 (the environment llf-recipes runs in)",
        _LF_PACKAGES, ("llamafactory", "transformers", "trl", "peft", "torch"), snapshot="0.9.5",
        refuses={"ppo": "LLaMA-Factory 0.9.5's PPO trainer refuses trl > 0.9.6, but its other stages need the trl 0.24 "
                        "it installs: the ppo stage stops at start-up"},
    ),
    Engine(
        "llamafactory-ppo", "LLaMA-Factory 0.9.3 with trl 0.9.6 and transformers 4.52, for PPO (its own environment)",
        _LF_PACKAGES, ("llamafactory", "transformers", "trl", "peft", "torch"), lock="llamafactory-ppo.txt",
        snapshot="0.9.3", transformers_major=4, translations=(warmup_steps_as_ratio,),
    ),
    Engine(
        "easyr1", "EasyR1 (verl) for GRPO on GPUs, one or many nodes (its own environment; NVIDIA GPUs only)",
        ("verl", "transformers", "torch", "vllm", "ray", "omegaconf", "peft", "flash-attn"),
        ("verl.trainer.config", "transformers", "omegaconf", "ray", "torch", "vllm", "flash_attn"),
        lock="easyr1.txt", program=None, transformers_major=4, gpu_only=("vllm", "flash-attn", "flash_attn"),
        legacy_env="LLF_EASYR1_PYTHON", planner="grpo", source_repo="https://github.com/hiyouga/EasyR1",
    ),
    Engine(
        "trl", "TRL's GRPOTrainer for GRPO on one node, CPU too (the environment llf-recipes runs in)",
        ("trl", "transformers", "peft", "torch", "accelerate", "datasets"), ("trl", "transformers", "peft", "torch"),
        program=None, planner="grpo",
    ),
    Engine(
        "llf", "llf-recipes' own verbs as stages: generate, score, judge, pairs (the environment llf-recipes runs in)",
        ("llamafactory", "transformers", "torch", "peft"), ("llamafactory",), program=None, planner="llf",
    ),
)}

# LLaMA-Factory stages whose default engine is not the main one.
STAGE_DEFAULTS = {"ppo": "llamafactory-ppo"}
# Recipe stage verbs that run one of llf-recipes' own verbs (llf_recipes/engines/llf.py).
LLF_VERBS = ("generate", "score", "judge", "pairs")


def get(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        guess = nearest(name, ENGINES)
        raise LlfError(f"engine {name!r} is unknown", key="engine",
                       fix=(f"did you mean {guess!r}? " if guess else "") + f"engines: {', '.join(ENGINES)}") from None


def name_for(verb: str, config: dict[str, Any], declared: str | None = None) -> str:
    """The engine a stage runs on: the one it declares, else its stage's default."""
    if declared:
        return get(declared).name
    if verb in LLF_VERBS:
        return "llf"
    if verb == "grpo":
        backend = config.get("backend")
        return backend if backend in ENGINES else "trl"
    return STAGE_DEFAULTS.get(str(config.get("stage", "")), MAIN) if verb == "train" else MAIN


def adapt(rendered) -> None:
    """Translate a rendered stage's config into its engine's dialect, noting each change on the stage (idempotent)."""
    engine = get(rendered.engine)
    for note in engine.translate(rendered.config):
        if note not in rendered.translations:
            rendered.translations.append(note)

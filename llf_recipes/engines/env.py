"""Where an engine lives (its interpreter and `bin/`), whether it is there, and the versions it holds.

An engine's interpreter is, first found wins: `--engine NAME=PYTHON`; `$LLF_ENGINE_<NAME>` (upper case, `-` as `_`,
e.g. LLF_ENGINE_LLAMAFACTORY_PPO); an older variable the engine honours (LLF_EASYR1_PYTHON); the user's engines file
(`$LLF_RECIPES_CONFIG/engines.yaml`, default ~/.config/llf-recipes/engines.yaml: `NAME: /path/to/python`); the
environment `llf-recipes engine install NAME` built under the cache (`$LLF_RECIPES_CACHE/engines/`); and, for the
engines that share it, the interpreter llf-recipes runs in.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from llf_recipes.engines import Engine, get, normalise
from llf_recipes.errors import LlfError

MARKER = "llf-engine.json"  # written last by `engine install`: its presence means the environment is complete

# Reads distribution versions without importing them (fast, and harmless where a package is broken).
VERSIONS_PROBE = (
    "import json, sys\n"
    "from importlib import metadata\n"
    "out = {}\n"
    "for name in json.loads(sys.argv[1]):\n"
    "    try:\n"
    "        out[name] = metadata.version(name)\n"
    "    except metadata.PackageNotFoundError:\n"
    "        out[name] = None\n"
    "print(json.dumps(out))\n"
)


def cache_root() -> Path:
    return Path(os.environ.get("LLF_RECIPES_CACHE") or Path.home() / ".cache" / "llf-recipes").expanduser()


def engines_dir() -> Path:
    return cache_root() / "engines"


def config_file() -> Path:
    base = os.environ.get("LLF_RECIPES_CONFIG") or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "llf-recipes"
    return Path(base).expanduser() / "engines.yaml"


def lock_digest(engine: Engine) -> str:
    path = engine.lock_path
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path and path.is_file() else "none"


def install_dir(engine: Engine) -> Path:
    """Where `engine install` builds it: named by the lock's hash, so a changed lock gets a fresh environment."""
    return engines_dir() / f"{engine.name}-{lock_digest(engine)}"


def env_var(engine: Engine) -> str:
    return "LLF_ENGINE_" + engine.name.upper().replace("-", "_")


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """`--engine NAME=PYTHON` (repeatable) -> {name: python}."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, python = item.partition("=")
        if not sep or not python.strip():
            raise LlfError(f"--engine {item!r} is not NAME=PYTHON", key="--engine",
                           fix="e.g. --engine llamafactory-ppo=/opt/ppo-env/bin/python")
        out[get(name.strip()).name] = python.strip()
    return out


def _user_config() -> dict[str, str]:
    path = config_file()
    if not path.is_file():
        return {}
    from llf_recipes import yamlio

    data = yamlio.load(path.read_text(encoding="utf-8"), where=str(path)) or {}
    if not isinstance(data, dict):
        raise LlfError("must map engine names to interpreter paths", where=str(path),
                       fix="write lines like `llamafactory-ppo: /opt/ppo-env/bin/python`")
    for name in data:
        get(str(name))
    return {str(k): str(v) for k, v in data.items() if v}


@dataclass(frozen=True)
class EngineEnv:
    engine: Engine
    python: str  # a path, or a bare name looked up on PATH
    source: str  # how it was found, for `engine list` and the manifest

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def bin_dir(self) -> Path | None:
        return Path(self.python).parent if os.sep in self.python else None

    @property
    def is_current(self) -> bool:
        """The interpreter llf-recipes runs in (its packages are read in-process)."""
        return self.source == "this environment"

    def installed(self) -> bool:
        if os.sep not in self.python:
            return shutil.which(self.python) is not None
        return Path(self.python).exists()

    def program(self, name: str) -> str:
        """A console script of this environment; a bare name for llf-recipes' own (found on PATH or beside it)."""
        if self.is_current or self.bin_dir is None:
            return name
        return str(self.bin_dir / name)

    def versions(self) -> dict[str, str | None]:
        packages = list(self.engine.packages)
        if self.is_current:
            found: dict[str, str | None] = {}
            for name in packages:
                try:
                    found[name] = metadata.version(name)
                except metadata.PackageNotFoundError:
                    found[name] = None
            return found
        try:
            proc = subprocess.run([self.python, "-c", VERSIONS_PROBE, json.dumps(packages)], capture_output=True,
                                  text=True, timeout=60, check=False)
            return json.loads(proc.stdout) if proc.returncode == 0 else {name: None for name in packages}
        except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
            return {name: None for name in packages}

    def record(self) -> dict[str, object]:
        """What a run manifest keeps: the engine, where it ran, and the versions read from that interpreter."""
        return {"name": self.name, "python": self.python, "source": self.source, "versions": self.versions()}

    def missing_error(self, stage: str) -> LlfError:
        if self.engine.lock and self.source == "not installed":
            return LlfError(f"stage {stage} runs on engine {self.name}, which is not installed",
                            key="engine", fix=f"llf-recipes engine install {self.name}   (or run with --install-engines; "
                                              f"--engine {self.name}=PYTHON points at an existing environment)")
        return LlfError(f"stage {stage} runs on engine {self.name}, whose interpreter {self.python} ({self.source}) "
                        "does not exist", key="engine",
                        fix=f"point it at an existing one: --engine {self.name}=PYTHON, or ${env_var(self.engine)}")


def resolve(name: str, overrides: dict[str, str] | None = None, extra: str | None = None) -> EngineEnv:
    """Find an engine's interpreter (see the module's docstring); `extra` is a stage setting that comes first
    after --engine (easyr1_python)."""
    engine = get(name)
    overrides = overrides or {}
    if name in overrides:
        return EngineEnv(engine, overrides[name], "--engine")
    if extra:
        return EngineEnv(engine, extra, "stage setting")
    for var in (env_var(engine), engine.legacy_env):
        if var and os.environ.get(var):
            return EngineEnv(engine, os.environ[var], f"${var}")
    configured = _user_config().get(name)
    if configured:
        return EngineEnv(engine, configured, str(config_file()))
    if engine.lock:
        target = install_dir(engine)
        if (target / MARKER).is_file():
            return EngineEnv(engine, str(target / "bin" / "python"), "installed")
        if engine.legacy_env:  # EasyR1's environment was python3 on PATH before it had an installer
            return EngineEnv(engine, "python3", "PATH (not installed here)")
        return EngineEnv(engine, str(target / "bin" / "python"), "not installed")
    return EngineEnv(engine, sys.executable, "this environment")


def compare_with_lock(engine: Engine, versions: dict[str, str | None]) -> list[tuple[str, str | None, str | None]]:
    """(package, found, locked) for every recorded package the lock pins differently (or that is missing)."""
    locked = engine.locked_versions()
    out = []
    for name, found in versions.items():
        want = locked.get(normalise(name))
        if want is not None and found != want:
            out.append((name, found, want))
    return out

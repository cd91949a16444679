"""`engine check NAME`: import the engine's packages in its own interpreter and compare versions with its lock."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from llf_recipes.engines.env import EngineEnv, compare_with_lock

IMPORT_PROBE = (
    "import importlib, json, sys\n"
    "out = {}\n"
    "for name in json.loads(sys.argv[1]):\n"
    "    try:\n"
    "        importlib.import_module(name)\n"
    "        out[name] = None\n"
    "    except BaseException as exc:\n"
    "        out[name] = f'{type(exc).__name__}: {exc}'.splitlines()[0][:300]\n"
    "print(json.dumps(out))\n"
)


@dataclass(frozen=True)
class Line:
    status: str  # ok | warn | fail
    text: str


def check(env: EngineEnv, timeout: float = 600) -> list[Line]:
    """One line per finding; any `fail` means the engine cannot run its stages."""
    engine = env.engine
    if not env.installed():
        return [Line("fail", str(env.missing_error("(any)")).replace("stage (any) runs on engine", "engine", 1))]
    lines = [Line("ok", f"interpreter {env.python} ({env.source})")]
    try:
        proc = subprocess.run([env.python, "-c", IMPORT_PROBE, json.dumps(list(engine.imports))], capture_output=True,
                              text=True, timeout=timeout, check=False)
        results = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
        return [*lines, Line("fail", f"cannot run {env.python}: {exc}")]
    gpu_only = {name.replace("-", "_") for name in engine.gpu_only}
    for module, error in results.items():
        if error is None:
            lines.append(Line("ok", f"import {module}"))
        elif module.split(".")[0] in gpu_only:
            lines.append(Line("warn", f"import {module}: {error} (needs NVIDIA GPUs; expected on a CPU machine)"))
        else:
            lines.append(Line("fail", f"import {module}: {error}"))
    versions = env.versions()
    differs = {name: (found, want) for name, found, want in compare_with_lock(engine, versions)}
    for name, found in versions.items():
        if name in differs:
            found, want = differs[name]
            lines.append(Line("fail", f"{name} {found or 'missing'}, the lock pins {want}"))
        elif found:
            lines.append(Line("ok", f"{name} {found}"))
    return lines

"""`engine install NAME`: build an engine's environment from its lock file, under the cache, all or nothing.

With uv (a dependency of llf-recipes; `uv venv --relocatable`, then `uv pip install -r LOCK`) the environment is built
beside its final place and renamed into it, so a failed or interrupted install leaves nothing behind; uv's cache
hardlinks what earlier installs downloaded (torch, CUDA wheels), so a second environment costs seconds. Without uv,
`python -m venv` and pip build it in place, and a failure removes it. The full output goes to a log beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from llf_recipes.engines import Engine
from llf_recipes.engines.env import MARKER, engines_dir, install_dir, lock_digest
from llf_recipes.errors import LlfError


def uv_program() -> str | None:
    """uv from its Python package (pinned in llf-recipes' dependencies), else on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def _python_request() -> str:
    """The lock is compiled for CPython 3.11: this interpreter when it is one, else uv finds a 3.11."""
    return sys.executable if sys.version_info[:2] == (3, 11) else "3.11"


def requirements_here(engine: Engine, gpu: bool) -> tuple[str, list[str]]:
    """The lock's text for this machine, and the GPU-only requirements left out where there is no NVIDIA GPU (they
    do not build or run there; `engine check` reports them as absent)."""
    text = engine.lock_path.read_text(encoding="utf-8")
    if gpu or not engine.gpu_only:
        return text, []
    kept, skipped = [], []
    gpu_only = {name.replace("_", "-") for name in engine.gpu_only}
    for line in text.splitlines():
        spec = line.split("#", 1)[0].strip()
        name = spec.split(";")[0]
        for sep in ("==", ">=", "<=", "~=", "!=", "<", ">", "[", " "):
            name = name.split(sep)[0]
        if spec and name.strip().lower().replace("_", "-") in gpu_only:
            skipped.append(spec)
            continue
        kept.append(line)
    return "\n".join(kept) + "\n", skipped


def install_steps(engine: Engine, target: Path, *, uv: str | None, find_links: list[str], offline: bool,
                  source: str | None = None, lock: str | None = None) -> list[list[str]]:
    """The commands that build `target` (argv lists); `lock` replaces the engine's lock file (GPU-only lines left out)."""
    lock = lock or str(engine.lock_path)
    python = str(target / "bin" / "python")
    extra: list[str] = []
    for d in find_links:
        extra += ["--find-links", d]
    if uv:
        if offline:
            extra += ["--offline"]
        steps = [[uv, "venv", "--quiet", "--relocatable", "--python", _python_request(), str(target)],
                 [uv, "pip", "install", "--python", python, *extra, "-r", lock]]
        if source:
            steps.append([uv, "pip", "install", "--python", python, *extra, "--no-deps", source])
        return steps
    if offline:
        extra += ["--no-index"]
    steps = [[sys.executable, "-m", "venv", str(target)],
             [python, "-m", "pip", "install", "--disable-pip-version-check", *extra, "-r", lock]]
    if source:
        steps.append([python, "-m", "pip", "install", *extra, "--no-deps", source])
    return steps


def install(engine: Engine, *, find_links: list[str] | None = None, offline: bool = False, force: bool = False,
            source: str | None = None, use_uv: bool = True, echo=print) -> Path:
    """Build `engine` into the cache; return its interpreter. Raises LlfError (the log's last lines) on failure."""
    if engine.lock_path is None:
        raise LlfError(f"engine {engine.name} runs in the environment llf-recipes is installed in; there is nothing "
                       "to build", key="engine", fix='pip install "llf-recipes[train]" installs it')
    final = install_dir(engine)
    if (final / MARKER).is_file() and not force:
        echo(f"engine {engine.name} is already installed in {final}")
        return final / "bin" / "python"
    root = engines_dir()
    root.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    uv = uv_program() if use_uv else None
    log_path = root / f"{final.name}.install.log"
    with FileLock(str(root / f".{engine.name}.lock")):
        # With uv the environment is relocatable: build it beside its place and rename. pip's is not: build in place.
        build = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}") if uv else final
        if final.exists() and (build == final or not (final / MARKER).is_file()):
            shutil.rmtree(final)  # an incomplete environment (no marker), or pip's in-place rebuild under --force
        text, skipped = requirements_here(engine, gpu=shutil.which("nvidia-smi") is not None)
        lock = None
        if skipped:
            lock = str(root / f"{final.name}.requirements.txt")
            Path(lock).write_text(text, encoding="utf-8")
            echo(f"no NVIDIA GPU here: leaving out {', '.join(skipped)} (`engine check {engine.name}` reports them)")
        steps = install_steps(engine, build, uv=uv, find_links=find_links or [], offline=offline, source=source,
                              lock=lock)
        tool = "uv" if uv else "pip (uv not found)"
        echo(f"installing engine {engine.name} from {engine.lock_path.name} with {tool} into {final}")
        started = time.time()
        try:
            with open(log_path, "w", encoding="utf-8") as log:
                for i, argv in enumerate(steps, 1):
                    label = "creating the environment" if i == 1 else f"installing {_what(argv, engine)}"
                    _run_step(argv, log, f"[{i}/{len(steps)}] {label}", echo)
            (build / MARKER).write_text(json.dumps({
                "engine": engine.name, "lock": engine.lock_path.name, "lock_sha256_12": lock_digest(engine),
                "tool": tool, "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.time() - started, 1)}, indent=1) + "\n", encoding="utf-8")
            if build != final:
                old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
                if final.exists():  # --force: the working environment stays until the new one is complete
                    os.replace(final, old)
                os.replace(build, final)
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
    echo(f"installed engine {engine.name} in {time.time() - started:.1f} s: {final / 'bin' / 'python'}  (log: {log_path})")
    return final / "bin" / "python"


def _what(argv: list[str], engine: Engine) -> str:
    return argv[-1] if "--no-deps" in argv else f"the locked packages ({len(engine.locked_versions()) or 'pinned'})"


def _run_step(argv: list[str], log, label: str, echo) -> None:
    """Run one step, its output to the log; a spinner on a terminal; the log's tail in the error on failure."""
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    echo(label)
    try:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        raise LlfError(f"{label.split('] ', 1)[-1]} failed: cannot start {argv[0]} ({exc})", key="engine") from None
    try:
        if sys.stderr.isatty():
            from rich.console import Console

            with Console(stderr=True).status(label.split("] ", 1)[-1] + " ..."):
                code = proc.wait()
        else:
            code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    if code != 0:
        log.flush()
        tail = Path(log.name).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-8:]
        raise LlfError(f"{label.split('] ', 1)[-1]} failed (exit {code}); nothing was left installed. Last lines of "
                       f"{log.name}:\n    " + "\n    ".join(tail), key="engine",
                       fix="--find-links DIR installs from a wheelhouse, --offline from uv's cache only")


def _stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

"""The machine, checked before a stage starts: the devices the layout names, bf16 on them, the packages each stage
needs in the engine's own environment, and free disk under the output root. Every problem at once, each with a fix.

Nothing here imports torch: devices come from `nvidia-smi` (or /proc and /dev), packages from the engine interpreter's
metadata, so `run --dry-run` and `doctor` stay quick.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llf_recipes.hardware import is_index

GIB = 1 << 30
# import name, distribution, what needs it: which stage config keys make a package necessary.
PACKAGES = {
    "bitsandbytes": ("bitsandbytes", "pip install bitsandbytes (4-bit/8-bit QLoRA), or --set quantization_bit=null"),
    "deepspeed": ("deepspeed", 'pip install deepspeed (or the train extra), or --set deepspeed=none on one device'),
    "flash_attn": ("flash-attn", "pip install flash-attn --no-build-isolation, or --set flash_attn=auto"),
    "liger_kernel": ("liger-kernel", "pip install liger-kernel, or --set enable_liger_kernel=false"),
}


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str
    severity: str = "error"  # error | warning

    def format(self) -> str:
        return f"{self.severity}: {self.what}\n  fix: {self.fix}"


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_cap: float | None


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[Gpu, ...]
    how: str  # how they were found, or why none were


def cuda_inventory() -> Inventory:
    """The CUDA devices of this machine as the driver reports them (all of them, whatever CUDA_VISIBLE_DEVICES says)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            proc = subprocess.run([smi, "--query-gpu=index,name,compute_cap", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Inventory((), f"nvidia-smi did not answer ({exc})")
        if proc.returncode != 0:
            why = (proc.stdout + proc.stderr).strip().splitlines()
            return Inventory((), f"nvidia-smi failed: {why[0] if why else f'exit code {proc.returncode}'}")
        gpus = []
        for line in proc.stdout.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 3 and parts[0].isdigit():
                try:
                    cap = float(parts[2])
                except ValueError:
                    cap = None
                gpus.append(Gpu(int(parts[0]), parts[1], cap))
        return Inventory(tuple(gpus), "nvidia-smi")
    proc_dir = Path("/proc/driver/nvidia/gpus")
    if proc_dir.is_dir():
        found = sorted(proc_dir.iterdir())
        return Inventory(tuple(Gpu(i, "NVIDIA GPU", None) for i in range(len(found))), "/proc/driver/nvidia")
    return Inventory((), "no nvidia-smi and no /proc/driver/nvidia")


def visible_cuda_devices() -> int:
    """How many CUDA devices a process started here sees: the driver's, narrowed by CUDA_VISIBLE_DEVICES (CUDA reads
    its entries up to the first that names no device)."""
    count = len(cuda_inventory().gpus)
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None or not count:
        return count
    seen = 0
    for entry in (e.strip() for e in listed.split(",")):
        if not (is_index(entry) and int(entry) < count) and not entry.startswith(("GPU-", "MIG-")):
            break
        seen += 1
    return min(seen, count)


def npu_count() -> int:
    return sum(1 for p in Path("/dev").glob("davinci[0-9]*"))


def local_device() -> str:
    """`--device auto`: cuda where the driver reports a GPU, npu where Ascend devices are, else cpu."""
    if cuda_inventory().gpus:
        return "cuda"
    return "npu" if npu_count() else "cpu"


def engine_python(program: str) -> str:
    """The interpreter a console script runs under (its shebang), so packages are checked where the engine runs."""
    from llf_recipes.launchers.local import resolve_program

    if Path(program).name.startswith("python"):
        return shutil.which(program) or program
    path = resolve_program(program)
    try:
        with open(path, "rb") as fh:
            first = fh.readline(512).decode("utf-8", errors="replace")
    except OSError:
        return sys.executable
    if first.startswith("#!"):
        parts = first[2:].split()
        if parts and Path(parts[0]).name == "env" and len(parts) > 1:
            return shutil.which(parts[1]) or parts[1]
        if parts:
            return parts[0]
    return sys.executable


def installed_in(python: str, modules: list[str]) -> dict[str, bool]:
    """Which of `modules` the interpreter `python` can import (found, not imported)."""
    if not modules:
        return {}
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        from importlib.util import find_spec

        def found(module: str) -> bool:
            try:
                return find_spec(module) is not None
            except ImportError:  # a dotted name whose parent package is missing
                return False

        return {m: found(m) for m in modules}
    code = ("import importlib.util as u, json, sys\n"
            "def f(m):\n"
            "    try:\n"
            "        return u.find_spec(m) is not None\n"
            "    except ImportError:\n"
            "        return False\n"
            "print(json.dumps({m: f(m) for m in sys.argv[1:]}))")
    try:
        proc = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True, timeout=30,
                              check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else {m: False for m in modules}
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return {m: False for m in modules}


def needed_packages(config: dict[str, Any]) -> list[str]:
    """The import names a stage's rendered config needs beyond the engine itself."""
    needs = []
    if config.get("quantization_bit") and str(config.get("quantization_method") or "bnb") in ("bnb", "bitsandbytes"):
        needs.append("bitsandbytes")
    if config.get("deepspeed"):
        needs.append("deepspeed")
    if str(config.get("flash_attn") or "") == "fa2":
        needs.append("flash_attn")
    if config.get("enable_liger_kernel") or config.get("use_liger_kernel"):
        needs.append("liger_kernel")
    return needs


_PARAMS = re.compile(r"(\d+(?:\.\d+)?)\s*[Bb](?![a-z])")


def model_bytes(model: Any) -> int | None:
    """The weights' size: summed from a local directory, else guessed from a hub id's parameter count (2 bytes each)."""
    if not model:
        return None
    path = Path(str(model))
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file())
    m = _PARAMS.search(str(model).rsplit("/", 1)[-1])
    return int(float(m.group(1)) * 1e9 * 2) if m else None


def disk_needed(config: dict[str, Any]) -> int:
    """An estimate of what a stage writes: LoRA adapters are small; full tuning saves the model and, per kept
    checkpoint, the model again with its optimizer state (about five times the bf16 weights)."""
    size = model_bytes(config.get("model_name_or_path")) or 0
    if config.get("export_dir"):
        return size + 256 * 1024 * 1024
    if str(config.get("finetuning_type") or "lora") == "lora":
        return int(size * 0.1) + 256 * 1024 * 1024
    keep = config.get("save_total_limit")
    keep = keep if isinstance(keep, int) and keep > 0 else 2
    return size * (1 + 5 * keep) + 256 * 1024 * 1024


def writable_problem(root: Path) -> Problem | None:
    """The output root must be creatable and writable before a stage starts (no space to judge otherwise)."""
    from llf_recipes.errors import LlfError
    from llf_recipes.paths import writable_dir

    try:
        writable_dir(root, "--output-root")
    except LlfError as exc:
        return Problem(f"output root {exc.message}", exc.fix or "give --output-root a directory you can write to")
    return None


def free_bytes(path: Path) -> int:
    for candidate in (path, *path.absolute().parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return shutil.disk_usage(".").free


def check_devices(layout, configs: list[dict[str, Any]], inventory: Inventory | None = None) -> list[Problem]:
    problems: list[Problem] = []
    if layout.device == "cpu":
        return problems
    ids = list(layout.device_ids if layout.device_ids is not None else range(layout.per_node))
    if layout.device == "npu":
        count = npu_count()
        missing = [i for i in ids if i >= count]
        if missing:
            problems.append(Problem(f"{layout.source}: NPU {', '.join(map(str, missing))} not found "
                                    f"({count} NPU(s) under /dev/davinci*)",
                                    "name devices this machine has, or run on the machine that has them"))
        return problems
    inventory = inventory or cuda_inventory()
    have = {g.index: g for g in inventory.gpus}
    missing = [i for i in ids if i not in have]
    if missing:
        where = f"this machine has {len(have)} CUDA device(s)" if have else f"this machine has no CUDA device ({inventory.how})"
        problems.append(Problem(
            f"{layout.source}: GPU {', '.join(map(str, missing))} not found; {where}",
            f"use --gpus {','.join(str(i) for i in sorted(have)[:len(ids)])}" if have and len(have) >= len(ids)
            else "try the recipe on CPU with --smoke (a tiny model, a few steps), or run on a machine with the GPUs"))
    if any(c.get("bf16") for c in configs):
        old = [have[i] for i in ids if i in have and have[i].compute_cap is not None and have[i].compute_cap < 8.0]
        if old:
            names = ", ".join(f"GPU {g.index} ({g.name}, compute capability {g.compute_cap:g})" for g in old)
            problems.append(Problem(f"bf16 needs compute capability 8.0 or newer: {names}",
                                    "--set precision=fp16"))
    return problems


def check_stages(plans, *, output_root: Path | None = None, inventory: Inventory | None = None,
                 local: bool = True) -> list[Problem]:
    """Every problem of this machine for these planned stages. `local`: the stages run here (not on other hosts)."""
    problems: list[Problem] = []
    if not plans:
        return problems
    configs = [p.rendered.config for p in plans]
    layout = plans[0].rendered.layout
    if local:
        problems += check_devices(layout, configs, inventory)
    by_python: dict[str, set[str]] = {}
    engines: dict[str, tuple[str, tuple[str, ...], str]] = {}  # python -> (engine name, its imports, how to get it)
    for p in plans:
        env = getattr(p, "engine", None)  # the engine environment the stage runs in names its interpreter
        python = str(env.python) if env is not None else engine_python(p.commands[0].argv[0])
        if env is not None:
            engines[python] = (env.name, tuple(env.engine.imports), env.engine.install_fix(python))
        by_python.setdefault(python, set()).update(needed_packages(p.rendered.config))
    if local:
        for python, modules in by_python.items():
            name, imports, install = engines.get(python) or (
                "llamafactory", ("llamafactory",), f'pip install -e ".[train]" for {python}')
            present = installed_in(python, sorted({*modules, *imports}))
            missing = [m for m in imports if not present.get(m)]
            if missing:
                problems.append(Problem(f"engine {name}: {', '.join(missing)} not installed for {python}",
                                        install))
            for module in sorted(m for m in modules if not present.get(m)):
                dist, fix = PACKAGES[module]
                stages = ", ".join(p.stage for p in plans if module in needed_packages(p.rendered.config))
                problems.append(Problem(f"stage {stages} needs {dist}, which is not installed for the engine ({python})",
                                        fix))
        root = output_root or Path(str(plans[0].rendered.variables.get("output_root", "saves")))
        need = sum(disk_needed(c) for c in configs)
        unwritable = writable_problem(root)
        if unwritable is not None:
            problems.append(unwritable)
        elif free_bytes(root) < need:
            free = free_bytes(root)
            problems.append(Problem(f"{root}: {free / GIB:.1f} GiB free, the stages need about {need / GIB:.1f} GiB",
                                    "free some space, or --output-root DIR on a larger disk"))
    return problems


def raise_if_any(problems: list[Problem]) -> None:
    from llf_recipes.errors import LlfError

    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        print(p.format(), file=sys.stderr)
    if errors:
        raise LlfError(f"not started: the machine check found {len(errors)} problem(s) (listed above); "
                       "nothing was written or launched")


def recipes_needing(catalog, layout) -> dict[str, list[str]]:
    """Import name -> the recipes whose stages, rendered for `layout`, need that package."""
    from llf_recipes.errors import LlfError
    from llf_recipes.render import Overrides, Renderer

    needs: dict[str, list[str]] = {}
    for name in catalog.recipe_names():
        try:
            recipe = catalog.recipe(name)
            stages = Renderer(recipe, layout, Overrides.parse([], recipe), catalog).render_all()
        except LlfError:
            continue  # a recipe that does not render here is validate's to report
        for module in sorted({m for r in stages for m in needed_packages(r.config)}):
            needs.setdefault(module, []).append(name)
    return needs

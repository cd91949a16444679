"""`llf-recipes doctor`: installed versions against the tested pins and the validation snapshot, devices, optional
packages, and with --hostfile whether every host answers over ssh."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass

from llf_recipes import __version__
from llf_recipes.cli.common import add_catalog_args, add_verb, catalog_from, device_type
from llf_recipes.schema import SUPPORTED_VERSION

# The rest of the resolved set the engine tests ran with (pip's choice under the train extra's pins).
TESTED_WITH = {"transformers": "5.6.0", "peft": "0.18.1", "trl": "0.24.0", "datasets": "4.0.0", "accelerate": "1.11.0"}
# Optional packages: import name, distribution name, what needs it.
OPTIONAL = (
    ("deepspeed", "deepspeed", "recipes rendered for more than one device, or with offload"),
    ("bitsandbytes", "bitsandbytes", "4-bit QLoRA (quantization_bit with the bnb method)"),
    ("flash_attn", "flash-attn", "flash_attn: fa2"),
    ("liger_kernel", "liger-kernel", "enable_liger_kernel: true"),
    ("ray", "ray", "--launcher ray"),
)
_PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^;\s]+)\s*;\s*extra\s*==\s*['\"]train['\"]")


@dataclass
class Check:
    section: str
    name: str
    status: str  # ok | warn | error | info
    detail: str
    fix: str = ""


def add_parser(sub) -> None:
    p = add_verb(sub, "doctor", "check versions against the tested pins, devices, optional packages and hosts", """
        llf-recipes doctor
        llf-recipes doctor --hostfile hosts.txt --ssh-config ~/.ssh/cluster_config
        llf-recipes doctor --json
    """)
    p.add_argument("--hostfile", metavar="FILE", help="also check that every host answers over ssh (BatchMode)")
    p.add_argument("--device", type=device_type(with_index=False), default="cuda", metavar="{auto,cuda,npu,cpu}",
                   help="with --hostfile: the device kind whose count each host reports (default: cuda; auto: this "
                        "machine's kind)")
    p.add_argument("--ssh-config", metavar="FILE", help="ssh client configuration (ssh -F FILE)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    add_catalog_args(p)
    p.set_defaults(func=main)


def installed(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def train_pins() -> dict[str, str]:
    """The train extra's exact pins, read from this package's own metadata."""
    try:
        reqs = md.requires("llf-recipes") or []
    except md.PackageNotFoundError:
        reqs = []
    return {m.group(1): m.group(2) for r in reqs if (m := _PIN.match(r))}


def version_checks() -> list[Check]:
    checks = [Check("python", "llf-recipes", "info", f"{__version__} on Python {sys.version.split()[0]} ({sys.executable})")]
    for dist, pin in train_pins().items():
        have = installed(dist)
        if have is None:
            checks.append(Check("pins", dist, "error", f"not installed (tested: =={pin})",
                                'pip install -e ".[train]" (or pip install "llf-recipes[train]")'))
        elif have.split("+")[0] != pin:
            checks.append(Check("pins", dist, "warn", f"{have} installed, tested with =={pin}",
                                f'pip install "{dist}=={pin}" for the tested set'))
        else:
            checks.append(Check("pins", dist, "ok", have))
    lf = installed("llamafactory")
    if lf is not None and lf != SUPPORTED_VERSION:
        checks.append(Check("snapshot", "validation", "error",
                            f"validation uses LLaMA-Factory {SUPPORTED_VERSION}'s arguments but {lf} is installed",
                            f'pip install "llamafactory=={SUPPORTED_VERSION}", or regenerate the snapshot with '
                            "`python -m llf_recipes.schema.snapshot` and review what changed"))
    elif lf is not None:
        checks.append(Check("snapshot", "validation", "ok", f"snapshot of LLaMA-Factory {SUPPORTED_VERSION}"))
    for dist, tested in TESTED_WITH.items():
        have = installed(dist)
        if have is not None:
            status = "ok" if have == tested else "info"
            checks.append(Check("resolved", dist, status, have if have == tested else f"{have} (tested with {tested})"))
    return checks


def device_checks() -> list[Check]:
    """Devices as the driver reports them (no torch import), with bf16 support per GPU."""
    from llf_recipes.preflight import cuda_inventory, npu_count

    checks = [Check("devices", "cpu", "info", f"{os.cpu_count()} cores")]
    inventory = cuda_inventory()
    if inventory.gpus:
        for g in inventory.gpus:
            bf16 = "" if g.compute_cap is None else (
                ", bf16" if g.compute_cap >= 8.0 else ", no bf16 (--set precision=fp16)")
            cap = f", compute capability {g.compute_cap:g}" if g.compute_cap is not None else ""
            checks.append(Check("devices", f"cuda:{g.index}", "ok", f"{g.name}{cap}{bf16}"))
    else:
        checks.append(Check("devices", "cuda", "info", f"no CUDA device ({inventory.how}): recipes need a GPU; "
                                                       "`run NAME --smoke` checks one on CPU"))
    if npu_count():
        checks.append(Check("devices", "npu", "ok", f"{npu_count()} NPU(s) under /dev/davinci*"))
    return checks


def optional_checks(catalog=None) -> list[Check]:
    """Optional packages; one that bundled recipes need is an error where the engine is installed (training is
    meant to happen here), else a note."""
    from llf_recipes.hardware import default_layout
    from llf_recipes.preflight import engine_python, installed_in, recipes_needing

    needs = recipes_needing(catalog, default_layout("cuda")) if catalog is not None else {}
    training_here = installed("llamafactory") is not None
    python = engine_python("llamafactory-cli")  # where the engine runs, which is where these must be
    present = installed_in(python, [m for m, _, _ in OPTIONAL])
    checks = []
    for module, dist, needed_for in OPTIONAL:
        users = needs.get(module, [])
        if present.get(module):
            checks.append(Check("optional", dist, "ok", (installed(dist) if os.path.realpath(python) ==
                                                          os.path.realpath(sys.executable) else None) or "importable"))
        elif users:
            shown = ", ".join(users[:4]) + (f" and {len(users) - 4} more" if len(users) > 4 else "")
            checks.append(Check("optional", dist, "error" if training_here else "info",
                                f"not installed for the engine ({python}); {len(users)} recipe(s) need it on one "
                                f"GPU: {shown}",
                                f"pip install {dist}"))
        else:
            checks.append(Check("optional", dist, "info", f"not installed (needed for {needed_for})"))
    ssh = shutil.which("ssh")
    checks.append(Check("tools", "ssh", "ok" if ssh else "info", ssh or "not found (needed for --launcher ssh)"))
    smi = shutil.which("nvidia-smi")
    if smi:
        checks.append(Check("tools", "nvidia-smi", "ok", smi))
    return checks


def engine_checks() -> list[Check]:
    """Each engine, where it lives and whether it is there (`llf-recipes engine check NAME` imports its packages)."""
    from llf_recipes import engines
    from llf_recipes.engines.env import resolve

    checks = []
    for name in engines.ENGINES:
        env = resolve(name)
        where = f"{env.python} ({env.source})"
        if env.is_current:
            checks.append(Check("engines", name, "ok", where))
        elif env.source.startswith("PATH"):
            checks.append(Check("engines", name, "info", f"{env.python} on PATH, not checked",
                                f"llf-recipes engine check {name}"))
        elif env.source == "not installed" or not env.installed():
            fix = f"llf-recipes engine install {name}" + (" --source CHECKOUT" if env.engine.source_repo else "")
            checks.append(Check("engines", name, "info", f"not installed: {where}; its stages stop before they start",
                                fix))
        else:
            checks.append(Check("engines", name, "ok", where))
    return checks


def disk_checks(root: str = "saves") -> list[Check]:
    from pathlib import Path

    from llf_recipes.preflight import GIB, free_bytes

    free = free_bytes(Path(root))
    status = "ok" if free >= 20 * GIB else "warn"
    return [Check("disk", root, status, f"{free / GIB:.1f} GiB free",
                  "full-parameter runs of a 7B model keep tens of GiB of checkpoints: free space or use --output-root")]


def host_checks(hostfile: str, device: str, ssh_config: str | None, catalog) -> list[Check]:
    from llf_recipes.hardware import parse_hostfile
    from llf_recipes.launchers.ssh import probe_hosts

    layout = parse_hostfile(catalog.hostfile(hostfile), device=device)
    checks = []
    for node, (result, problem) in zip(layout.nodes, probe_hosts(layout, ssh_config)):
        if problem is not None:
            checks.append(Check("hosts", node.host, "error", problem.message, problem.fix))
            continue
        how = "local" if result["local"] else "answers over ssh"
        devices = result.get("devices")
        seen = f", {devices} {device.upper()}(s) visible" if devices is not None else ""
        status = "ok"
        fix = ""
        if devices is not None and devices < node.slots:
            status, fix = "error", f"set slots={devices} for {node.host} in {layout.source}"
        checks.append(Check("hosts", node.host, status, f"{how}, slots={node.slots}{seen}", fix))
    return checks


def main(args) -> int:
    if args.device == "auto":
        from llf_recipes.preflight import local_device

        args.device = local_device()
    catalog = catalog_from(args)
    checks = version_checks() + device_checks() + optional_checks(catalog) + engine_checks() + disk_checks()
    if args.hostfile:
        checks += host_checks(args.hostfile, args.device, args.ssh_config, catalog)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        section = None
        for c in checks:
            if c.section != section:
                section = c.section
                print(f"{section}:")
            print(f"  {c.status:<5} {c.name}: {c.detail}")
            if c.fix and (c.status in ("warn", "error") or c.section == "engines"):
                print(f"        fix: {c.fix}")
    bad = [c for c in checks if c.status == "error"]
    if bad:
        print(f"{len(bad)} problem(s): {', '.join(c.name for c in bad)}", file=sys.stderr)
    return 1 if bad else 0

"""`llf-recipes doctor`: installed versions against the tested pins and the validation snapshot, devices, optional
packages, and with --hostfile whether every host answers over ssh."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass

from llf_recipes import __version__
from llf_recipes.cli.common import add_catalog_args, add_verb, catalog_from
from llf_recipes.schema import SUPPORTED_VERSION

# The rest of the resolved set the engine tests ran with (pip's choice under the train extra's pins).
TESTED_WITH = {"transformers": "5.6.0", "peft": "0.18.1", "trl": "0.24.0", "datasets": "4.0.0", "accelerate": "1.11.0"}
# Optional packages: import name, distribution name, what needs it.
OPTIONAL = (
    ("deepspeed", "deepspeed", "recipes rendered for more than one device, or with offload"),
    ("bitsandbytes", "bitsandbytes", "4-bit QLoRA (quantization_bit with the bnb method)"),
    ("flash_attn", "flash-attn", "flash_attn: fa2"),
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
    p.add_argument("--device", choices=("cuda", "npu", "cpu"), default="cuda",
                   help="with --hostfile: the device kind whose count each host reports (default: cuda)")
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
    checks = [Check("devices", "cpu", "info", f"{os.cpu_count()} cores")]
    if importlib.util.find_spec("torch") is None:
        return [*checks, Check("devices", "torch", "warn", "not installed: devices unknown", 'pip install -e ".[train]"')]
    import torch  # heavy: only here

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        checks.append(Check("devices", "cuda", "ok", f"{len(names)}: {', '.join(names)}"))
    else:
        checks.append(Check("devices", "cuda", "info", "no CUDA device: train with --device cpu (tiny models only)"))
    if importlib.util.find_spec("torch_npu") is not None:
        try:
            import torch_npu  # noqa: F401

            checks.append(Check("devices", "npu", "ok", f"{torch.npu.device_count()} NPU(s)"))
        except Exception as exc:  # noqa: BLE001 - a broken CANN install should be reported, not crash doctor
            checks.append(Check("devices", "npu", "warn", f"torch_npu does not load: {exc}"))
    return checks


def optional_checks() -> list[Check]:
    checks = []
    for module, dist, needed_for in OPTIONAL:
        if importlib.util.find_spec(module) is None:
            checks.append(Check("optional", dist, "info", f"not installed (needed for {needed_for})"))
        else:
            checks.append(Check("optional", dist, "ok", installed(dist) or "importable"))
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
            fix = f"llf-recipes engine install {name}" + (" --source EASYR1_CHECKOUT" if name == "easyr1" else "")
            checks.append(Check("engines", name, "info", f"not installed: {where}; its stages stop before they start",
                                fix))
        else:
            checks.append(Check("engines", name, "ok", where))
    return checks


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
    checks = version_checks() + device_checks() + optional_checks() + engine_checks()
    if args.hostfile:
        checks += host_checks(args.hostfile, args.device, args.ssh_config, catalog_from(args))
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

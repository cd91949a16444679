"""Regenerate the snapshot of EasyR1's config dataclasses from a checkout of its source.

    python -m llf_recipes.engines.easyr1.snapshot /path/to/EasyR1            # writes llf_recipes/engines/easyr1/easyr1-<version>.json
    python -m llf_recipes.engines.easyr1.snapshot /path/to/EasyR1 --check    # exits 1 when checkout and snapshot differ

EasyR1 parses its YAML with OmegaConf into the `PPOConfig` dataclass tree (verl/trainer/config.py and
verl/workers/*/config.py). The snapshot lists every dotted key of that tree with its accepted value kinds and
default, so llf-recipes can check a rendered config without EasyR1, torch, vllm or a GPU. The source is read with
`ast`, never imported: the config modules' packages pull in torch and vllm.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SNAPSHOT_DIR = Path(__file__).resolve().parent
CONFIG_FILES = (
    "verl/trainer/config.py",
    "verl/workers/config.py",
    "verl/workers/actor/config.py",
    "verl/workers/critic/config.py",
    "verl/workers/reward/config.py",
    "verl/workers/rollout/config.py",
)
ROOT_CLASS = "PPOConfig"
# Values EasyR1 checks only at run time, read from where it defines them: key -> (file, name of the dict or Enum).
CHOICES = {
    "trainer.logger": ("verl/utils/logger/logger.py", "LOGGERS"),
    "algorithm.adv_estimator": ("verl/trainer/core_algos.py", "AdvantageEstimator"),
}
_SCALARS = {"str": ["str"], "int": ["int"], "float": ["float", "int"], "bool": ["bool"], "Any": ["any"]}


def _kinds(node: ast.expr | None) -> list[str]:
    """Value kinds a YAML value may have for an annotation (what OmegaConf accepts without a conversion error)."""
    if node is None:
        return ["any"]
    if isinstance(node, ast.Constant) and node.value is None:
        return ["null"]
    if isinstance(node, ast.Name):
        if node.id in _SCALARS:
            return _SCALARS[node.id]
        if node.id in ("dict", "Dict"):
            return ["dict"]
        if node.id in ("list", "List", "tuple", "Tuple"):
            return ["list"]
        return ["any"]
    if isinstance(node, ast.Subscript):
        base = node.value.id if isinstance(node.value, ast.Name) else ""
        if base == "Optional":
            return sorted(set(_kinds(node.slice)) | {"null"})
        if base == "Union":
            elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            return sorted({k for e in elts for k in _kinds(e)})
        if base in ("dict", "Dict"):
            return ["dict"]
        if base in ("list", "List", "tuple", "Tuple"):
            return ["list"]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return sorted(set(_kinds(node.left)) | set(_kinds(node.right)))
    return ["any"]


def _field_call(node: ast.expr | None) -> dict[str, ast.expr] | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "field":
        return {kw.arg: kw.value for kw in node.keywords if kw.arg}
    return None


def _literal(node: ast.expr | None) -> Any:
    if node is None:
        return None
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)
    return list(value) if isinstance(value, tuple) else value


def read_classes(checkout: Path) -> dict[str, list[dict[str, Any]]]:
    """Every @dataclass in the config files: class name -> fields (name, annotation node, default node, init)."""
    classes: dict[str, list[dict[str, Any]]] = {}
    for rel in CONFIG_FILES:
        path = checkout / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: is {checkout} a checkout of EasyR1?")
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            decorators = [d.id if isinstance(d, ast.Name) else getattr(getattr(d, "func", None), "id", "") for d in node.decorator_list]
            if "dataclass" not in decorators:
                continue
            fields = []
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    fields.append({"name": stmt.target.id, "annotation": stmt.annotation, "value": stmt.value})
            classes[node.name] = fields
    return classes


def flatten(classes: dict[str, list[dict[str, Any]]], name: str = ROOT_CLASS, prefix: str = "") -> dict[str, dict[str, Any]]:
    keys: dict[str, dict[str, Any]] = {}
    for f in classes[name]:
        key = f"{prefix}{f['name']}"
        call = _field_call(f["value"])
        factory = call.get("default_factory") if call else None
        if isinstance(factory, ast.Name) and factory.id in classes:
            keys.update(flatten(classes, factory.id, f"{key}."))
            continue
        entry: dict[str, Any] = {"kinds": _kinds(f["annotation"])}
        if call is not None:
            if isinstance(factory, ast.Name):
                entry["default"] = {"dict": {}, "list": []}.get(factory.id)
            else:
                entry["default"] = _literal(call.get("default"))
            init = call.get("init")
            if isinstance(init, ast.Constant) and init.value is False:
                entry["auto"] = True  # computed by EasyR1 in post_init; a value set here is overwritten
        else:
            entry["default"] = _literal(f["value"])
        keys[key] = entry
    return keys


def read_choices(checkout: Path, rel: str, name: str) -> list[str]:
    """The keys of a module-level dict, or the values of an Enum class, named `name` in `rel`."""
    tree = ast.parse((checkout / rel).read_text(encoding="utf-8"))
    for node in tree.body:
        named = isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
        if named and isinstance(node.value, ast.Dict):
            return [k.value for k in node.value.keys if isinstance(k, ast.Constant)]
        if isinstance(node, ast.ClassDef) and node.name == name:
            return [s.value.value for s in node.body
                    if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str)]
    raise FileNotFoundError(f"{name} not found in {checkout / rel}")


def _version(checkout: Path) -> str:
    tree = ast.parse((checkout / "verl" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets):
            return str(ast.literal_eval(node.value))
    return "unknown"


def _commit(checkout: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def build(checkout: str | Path) -> dict[str, Any]:
    checkout = Path(checkout)
    classes = read_classes(checkout)
    if ROOT_CLASS not in classes:
        raise FileNotFoundError(f"no {ROOT_CLASS} dataclass in {checkout / CONFIG_FILES[0]}")
    keys = flatten(classes)
    for key, (rel, name) in CHOICES.items():
        keys[key]["choices"] = read_choices(checkout, rel, name)
    return {
        "easyr1": _version(checkout),
        "commit": _commit(checkout),
        "generated_by": "python -m llf_recipes.engines.easyr1.snapshot CHECKOUT",
        "keys": keys,
    }


def snapshot_path(version: str) -> Path:
    return SNAPSHOT_DIR / f"easyr1-{version}.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llf_recipes.engines.easyr1.snapshot", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkout", help="a checkout of EasyR1's source (the directory holding verl/)")
    ap.add_argument("--check", action="store_true", help="compare the keys with the stored snapshot instead of writing")
    args = ap.parse_args(argv)
    try:
        data = build(args.checkout)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = snapshot_path(data["easyr1"])
    if args.check:
        if not path.is_file():
            print(f"no snapshot for EasyR1 {data['easyr1']} at {path}", file=sys.stderr)
            return 1
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored["keys"] != data["keys"]:
            changed = sorted(set(stored["keys"]) ^ set(data["keys"])) or sorted(
                k for k in data["keys"] if stored["keys"].get(k) != data["keys"][k])
            print(f"{path.name} differs from {args.checkout}: {', '.join(changed[:10])}", file=sys.stderr)
            return 1
        print(f"{path.name} matches {args.checkout}")
        return 0
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(data['keys'])} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

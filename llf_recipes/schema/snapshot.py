"""Regenerate the LLaMA-Factory argument snapshot from the installed package.

    python -m llf_recipes.schema.snapshot            # writes llf_recipes/schema/llamafactory-<version>.json
    python -m llf_recipes.schema.snapshot --check    # exits 1 when the installed package and the snapshot differ

The snapshot lists, per verb, every key LLaMA-Factory's HfArgumentParser accepts, with its accepted value kinds,
default, enumerated choices and help text, so validation never has to import torch. A string key whose dataclass
splits a comma-separated value into a list (`dataset: a,b`) also accepts a YAML list: the snapshot marks it
`comma_list` and adds the `list` kind, found by constructing the dataclass with both forms. This module imports llamafactory (and so
torch): only this script and the tests that compare against the installed package use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent


def _kinds(tp: Any, choices: list[Any]) -> set[str]:
    """Map a type annotation to the JSON/YAML value kinds it accepts; collect Literal and Enum choices."""
    origin = typing.get_origin(tp)
    if tp is type(None):
        return {"null"}
    if tp is Any:
        return {"any"}
    if origin in (typing.Union, types.UnionType):
        out: set[str] = set()
        for arg in typing.get_args(tp):
            out |= _kinds(arg, choices)
        return out
    if origin is typing.Literal:
        out = set()
        for value in typing.get_args(tp):
            choices.append(value)
            out |= _kinds(type(value), [])
        return out
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        choices.extend(member.value for member in tp)
        return {"str"}
    base = origin or tp
    if base is bool:
        return {"bool"}
    if base is int:
        return {"int"}
    if base is float:
        return {"float", "int"}
    if base is str:
        return {"str"}
    if base in (dict, typing.Dict) or (isinstance(base, type) and issubclass(base, dict)):  # noqa: UP006
        return {"dict"}
    if base in (list, tuple, set, typing.List):  # noqa: UP006
        return {"list"}
    return {"any"}


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
    else:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value


# The smallest arguments each dataclass can be built with when probing a key's accepted forms.
_PROBE_BASE = {
    "ModelArguments": {"model_name_or_path": "m"},
    "DataArguments": {"mix_strategy": "interleave_under"},  # interleave_probs is only read when interleaving
}
_PROBE_VALUES = (("a,b", ["a", "b"]), ("0.5,0.5", [0.5, 0.5]))


def _splits_commas(cls: type, name: str) -> bool:
    """Whether the dataclass turns `"a,b"` into a list for this key and takes a list as it is."""
    if not hasattr(cls, "__post_init__") or cls.__name__ == "TrainingArguments":  # transformers' keys are typed lists
        return False
    base = _PROBE_BASE.get(cls.__name__, {})
    for text, items in _PROBE_VALUES:
        try:
            if getattr(cls(**base, **{name: text}), name) != items:
                continue
            return getattr(cls(**base, **{name: list(items)}), name) == items
        except Exception:  # noqa: BLE001, S112 - a key that refuses the probe value is simply not a list key
            continue
    return False


def _help(field: dataclasses.Field) -> str | None:
    text = (field.metadata or {}).get("help")
    return " ".join(str(text).split()) if text else None


def describe(classes: list[type], probe: bool = True) -> dict[str, dict[str, Any]]:
    keys: dict[str, dict[str, Any]] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if not field.init:
                continue
            choices: list[Any] = []
            kinds = _kinds(hints.get(field.name, Any), choices)
            comma_list = probe and "str" in kinds and "list" not in kinds and _splits_commas(cls, field.name)
            if comma_list:
                kinds.add("list")
            help_text = _help(field)
            keys[field.name] = {
                "group": cls.__name__,
                "kinds": sorted(kinds),
                "default": _default(field),
                **({"choices": list(dict.fromkeys(choices))} if choices else {}),
                **({"comma_list": True} if comma_list else {}),
                **({"help": help_text} if help_text else {}),
            }
    return dict(sorted(keys.items()))


def build() -> dict[str, Any]:
    import llamafactory
    from llamafactory.data.template import TEMPLATES
    from llamafactory.hparams import parser as lf_parser
    from transformers.integrations import integration_utils

    train = describe(lf_parser._TRAIN_ARGS)
    infer = describe(lf_parser._INFER_ARGS)
    reporters = sorted(set(integration_utils.INTEGRATION_TO_CALLBACK) | {"all", "none"})
    for verb in (train, infer):
        if "template" in verb:
            verb["template"]["choices"] = sorted(TEMPLATES)
        if "report_to" in verb:
            verb["report_to"]["choices"] = reporters
    return {
        "llamafactory": llamafactory.__version__,
        "generated_by": "python -m llf_recipes.schema.snapshot",
        "verbs": {"train": train, "infer": infer},
    }


def snapshot_path(version: str) -> Path:
    return SCHEMA_DIR / f"llamafactory-{version}.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llf_recipes.schema.snapshot", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the stored snapshot instead of writing")
    args = ap.parse_args(argv)
    data = build()
    path = snapshot_path(data["llamafactory"])
    text = json.dumps(data, indent=1, ensure_ascii=False, sort_keys=False) + "\n"
    if args.check:
        if not path.is_file():
            print(f"no snapshot for llamafactory {data['llamafactory']} at {path}", file=sys.stderr)
            return 1
        if path.read_text(encoding="utf-8") != text:
            print(f"{path} differs from the installed llamafactory {data['llamafactory']}", file=sys.stderr)
            return 1
        print(f"{path.name} matches the installed package")
        return 0
    path.write_text(text, encoding="utf-8")
    counts = ", ".join(f"{verb}: {len(keys)} keys" for verb, keys in data["verbs"].items())
    print(f"wrote {path} ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

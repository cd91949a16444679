"""Safe YAML in and out.

PyYAML follows YAML 1.1, where `1e-4` is a string; every LLaMA-Factory example writes learning rates that way and
means a number. The loader here resolves floats as YAML 1.2 does, so `1e-4` is 0.0001.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from llf_recipes.errors import LlfError


class SafeLoader(yaml.SafeLoader):
    pass


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)
# Replace PyYAML's float resolver with the YAML 1.2 one (which also accepts exponents without a dot), and read
# dates as the strings LLaMA-Factory's loader (OmegaConf) gives: `run_name: 2024-05-01` is a name, not a date.
SafeLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SafeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load(text: str, where: str = "<yaml>") -> Any:
    try:
        return yaml.load(text, Loader=SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise LlfError(f"invalid YAML: {problem}", where=f"{where}{line}") from None


def scalar(text: str) -> Any:
    """Type a command-line value as a YAML scalar: `3` -> 3, `1e-4` -> 0.0001, `true` -> True, `a,b` -> 'a,b'."""
    if text == "":
        return ""
    try:
        value = yaml.load(text, Loader=SafeLoader)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool, list, dict)) or value is None else text


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)

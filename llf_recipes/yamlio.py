"""Safe YAML in and out.

PyYAML follows YAML 1.1, where `1e-4` is a string; every LLaMA-Factory example writes learning rates that way and
means a number. The loader here resolves floats as YAML 1.2 does, so `1e-4` is 0.0001.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from llf_recipes.errors import LlfError


# libyaml's parser when PyYAML was built with it (several times faster: validating every recipe for every layout
# parses each rendered stage); the constructor and resolvers stay PyYAML's safe ones either way.
class SafeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
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


MAX_VALUES = 1_000_000  # values a document may expand to through aliases (a "billion laughs" stops here)


def load(text: str, where: str = "<yaml>", first_line: int = 1) -> Any:
    """`text` as YAML; errors name `where` and the line, counting `text`'s first line as `first_line`."""
    try:
        data = yaml.load(text, Loader=SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + first_line}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise LlfError(f"invalid YAML: {problem}", where=f"{where}{line}") from None
    except RecursionError:
        raise LlfError("invalid YAML: nested too deeply", where=where) from None
    if _expands_past(data, MAX_VALUES):
        raise LlfError(f"the YAML expands to more than {MAX_VALUES:,} values through its aliases", where=where,
                       fix="write the values out instead of aliasing aliases")
    return data


def _expands_past(data: Any, limit: int) -> bool:
    """Whether `data`, counting shared (aliased) parts once per reference, holds more than `limit` values."""
    count, todo = 0, [data]
    while todo:
        item = todo.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


_LINE_BREAKS = ("\n", "\r", "\x85", "\u2028", "\u2029")


def scalar(text: str, key: str | None = None) -> Any:
    """Type a command-line value as a YAML scalar: `3` -> 3, `1e-4` -> 0.0001, `true` -> True, `null` -> None; any
    other text is that text, exactly (`/data/qwen #v2`, `a: b`, quotes, line breaks are part of the value). A value
    written as a flow list or mapping (`[a, 2]`, `{k: v}`) is one. Nothing else of YAML applies: anchors, aliases and
    tags are refused (they are how a few bytes expand into gigabytes)."""
    if text == "" or any(ch in text for ch in _LINE_BREAKS):
        return text
    if (text[0], text[-1]) in (("[", "]"), ("{", "}")):
        events = _events(text)
        if events is None:
            return text
        _refuse_indicators(events, text, key)
        return yaml.load(text, Loader=SafeLoader)
    if text[0] in "&*!":
        events = _events(text)
        if events is not None:  # `*` alone is no YAML at all: text
            _refuse_indicators(events, text, key)
    return _typed(text)


def _typed(text: str) -> Any:
    tag = SafeLoader("").resolve(yaml.ScalarNode, text, (True, False))
    if tag == "tag:yaml.org,2002:str":
        return text
    try:
        return SafeLoader("").construct_object(yaml.ScalarNode(tag, text))
    except (yaml.YAMLError, ValueError, OverflowError):
        return text


def _refuse_indicators(events: list, text: str, key: str | None) -> None:
    if any(isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None) or
           (isinstance(e, (yaml.ScalarEvent, yaml.CollectionStartEvent)) and e.tag) for e in events):
        raise LlfError(f"--set {key or ''}={text[:40]}{'...' if len(text) > 40 else ''}: YAML anchors, aliases and "
                       "tags are not values", key=key,
                       fix="give a plain value (a number, true/false, text, [a, b] or {k: v})")


def _events(text: str) -> list | None:
    try:
        return list(yaml.parse(text, Loader=SafeLoader))
    except yaml.YAMLError:
        return None


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)

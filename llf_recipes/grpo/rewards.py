"""Reward functions shared by both GRPO backends.

A reward is a plain function `reward(response: str, answer: str | None, **row) -> float`: the model's completion as
text, the row's reference answer, and any other columns of the row. The TRL backend and the EasyR1 reward module
both call these same functions, so a recipe scores the same way on either engine.

Built in (the GSM8K set): xmlcount (0.125 per tag present), format (0.5 when <reasoning>...</reasoning> is followed
by <answer>...</answer>), integer (0.5 when the extracted answer is a number), correctness (2.0 when the extracted
answer equals the reference after numeric normalisation). A recipe names its own reward as `package.module:function`
(importable) or `path/to/file.py:function`.

This module uses the standard library only: EasyR1 imports it from its own environment.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path

from llf_recipes.data.gsm8k import normalize_number

Reward = Callable[..., float]

TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")
_FORMAT = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"


def extract_answer(response: str) -> str | None:
    """The text inside the last <answer> tag (up to its </answer>, or the end when the tag is left open).

    None when the response has no <answer> tag: an untagged "72" earns no answer credit.
    """
    if not isinstance(response, str) or _ANSWER_OPEN not in response:
        return None
    tail = response.rsplit(_ANSWER_OPEN, 1)[1]
    return tail.split(_ANSWER_CLOSE, 1)[0].strip()


def same_answer(extracted: str | None, answer: str | None) -> bool:
    """Numbers compare after normalisation ("1,000" == "1000", "72.0" == "72"); other text compares exactly."""
    if extracted is None or answer is None:
        return False
    want = normalize_number(str(answer))
    if want is not None:
        return normalize_number(extracted) == want
    return extracted.strip() == str(answer).strip()


def xmlcount(response: str, answer: str | None = None, **row) -> float:
    return sum(0.125 for tag in TAGS if tag in response)


def format_reward(response: str, answer: str | None = None, **row) -> float:
    return 0.5 if _FORMAT.search(response) else 0.0


def integer(response: str, answer: str | None = None, **row) -> float:
    return 0.5 if normalize_number(extract_answer(response)) is not None else 0.0


def correctness(response: str, answer: str | None = None, **row) -> float:
    return 2.0 if same_answer(extract_answer(response), answer) else 0.0


BUILTIN: dict[str, Reward] = {"xmlcount": xmlcount, "format": format_reward, "integer": integer, "correctness": correctness}
DEFAULT = ("xmlcount", "format", "integer", "correctness")


class RewardSpecError(ValueError):
    """A reward name that names nothing loadable; the message says what to write instead."""


def is_user_spec(name: str) -> bool:
    return ":" in name


def split_spec(spec: str) -> tuple[str, str]:
    """`pkg.mod:fn` or `path/file.py:fn` -> (module or path, function name)."""
    target, _, func = spec.rpartition(":")
    if not target or not func or not func.isidentifier():
        raise RewardSpecError(f"reward {spec!r} is not `module:function` or `path/to/file.py:function`")
    return target, func


def spec_file(spec: str, base: str | Path | None = None) -> Path | None:
    """For `path/file.py:fn`, the file (relative paths against `base`); None for an importable module."""
    target, _ = split_spec(spec)
    if not target.endswith(".py"):
        return None
    path = Path(target).expanduser()
    return path if path.is_absolute() or base is None else Path(base) / path


def load(name: str, base: str | Path | None = None) -> Reward:
    """A built-in reward by name, or a user's function by `module:function` / `file.py:function`."""
    if not is_user_spec(name):
        if name not in BUILTIN:
            raise RewardSpecError(f"no built-in reward {name!r} (built in: {', '.join(BUILTIN)}); "
                                  "name your own as module:function or path/to/file.py:function")
        return BUILTIN[name]
    target, func = split_spec(name)
    path = spec_file(name, base)
    if path is not None:
        if not path.is_file():
            raise RewardSpecError(f"reward file {path} does not exist")
        module_name = f"llf_user_reward_{path.stem}_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    else:
        if base is not None and str(base) not in sys.path:
            sys.path.append(str(base))  # a project's own modules, next to its recipes
        module = importlib.import_module(target)
    fn = getattr(module, func, None)
    if not callable(fn):
        raise RewardSpecError(f"{target} has no function {func!r}")
    return fn


def label(name: str) -> str:
    """A short metric name: `xmlcount`, or the function name of a user's reward."""
    return split_spec(name)[1] if is_user_spec(name) else name


def labels(names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """A distinct metric name per reward: the short one where it is unique, else qualified by its module or file
    (`a.score`, `b.score`), else the whole spec: two rewards that share a function name must not merge into one score."""
    from collections import Counter

    short = {n: label(n) for n in names}
    counts = Counter(short.values())
    out = {}
    for n in names:
        if counts[short[n]] > 1 and is_user_spec(n):
            target, func = split_spec(n)
            out[n] = f"{Path(target).stem if target.endswith('.py') else target}.{func}"
        else:
            out[n] = short[n]
    counts = Counter(out.values())
    return {n: (n if counts[v] > 1 and is_user_spec(n) else v) for n, v in out.items()}


def score(response: str, answer: str | None, rewards: dict[str, Reward], **row) -> dict[str, float]:
    """Every reward for one response, and their sum as `overall`."""
    out = {name: float(fn(response, answer, **row)) for name, fn in rewards.items()}
    return {"overall": sum(out.values()), **out}


# EasyR1's reward interface: a batch of {"response", "response_length", "ground_truth"} in, one dict per response out;
# `overall` is the reward, the other keys are logged.
REWARD_TYPE = "batch"


def easyr1_compute_score(reward_inputs: list[dict], rewards: list[str] | tuple[str, ...] = DEFAULT,
                         base: str | None = None, **_: object) -> list[dict[str, float]]:
    functions = {tag: load(name, base) for name, tag in labels(list(rewards)).items()}
    return [score(item["response"], item.get("ground_truth"), functions) for item in reward_inputs]

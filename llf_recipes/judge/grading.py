"""LLM-as-judge over `generate` outputs: single-answer grades (1-10) and pairwise A/B verdicts asked in both orders.

The prompts are Jinja templates (sandboxed) a user can replace with --rubric FILE. A judge reply must end its grade
as `[[N]]` (or `Rating: N`) and its verdict as `[[A]]`, `[[B]]` or `[[C]]` (a tie); any other reply is malformed:
counted and set aside with its text, never guessed at. A pairwise comparison asks twice, the answers swapped, and a
win counts only when both orders agree (else a tie), which cancels the judge's preference for a position.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError

SINGLE = """[Instruction]
Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant to the user
question displayed below. Consider helpfulness, relevance, accuracy, depth, creativity and level of detail.
{%- if reference %} A reference answer is given; use it to check correctness.{% endif %}
Begin with a short explanation, then rate the response on a scale of 1 to 10 in exactly this format: "[[rating]]",
for example: "Rating: [[5]]".

[Question]
{{ question }}
{% if reference %}
[Reference Answer]
{{ reference }}
{% endif %}
[The Start of Assistant's Answer]
{{ answer }}
[The End of Assistant's Answer]"""

PAIRWISE = """[Instruction]
Please act as an impartial judge and compare the two responses by AI assistants to the user question below. Choose
the one that follows the instructions and answers the question better. Do not let the order of the responses, their
length or the assistants' names influence you. After a short explanation, output your final verdict in exactly this
format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, "[[C]]" for a tie.

[User Question]
{{ question }}

[The Start of Assistant A's Answer]
{{ answer_a }}
[The End of Assistant A's Answer]

[The Start of Assistant B's Answer]
{{ answer_b }}
[The End of Assistant B's Answer]"""

_GRADE = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]|Rating:\s*(\d+(?:\.\d+)?)")
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


def load_template(path: str | Path | None, default: str):
    from jinja2 import StrictUndefined, TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    text = default if path is None else _read(Path(path))
    try:
        return SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True).from_string(text)
    except TemplateSyntaxError as exc:
        raise LlfError(f"not a valid Jinja template: {exc.message}", where=f"{path}:{exc.lineno}") from None


def _read(path: Path) -> str:
    if not path.is_file():
        raise LlfError(f"no rubric template at {path}", key="--rubric")
    return path.read_text(encoding="utf-8")


def render(template, where: str, **values: Any) -> str:
    from jinja2 import UndefinedError

    try:
        return template.render(**values)
    except UndefinedError as exc:
        raise LlfError(f"the rubric template uses a name it is not given: {exc.message}", where=where,
                       fix="use question, reference and answer (single) or question, answer_a and answer_b (pairwise)") from None


def parse_grade(text: str | None) -> float | None:
    """The last grade in the reply, when it is within 1..10."""
    found = _GRADE.findall(text or "")
    if not found:
        return None
    value = float(next(v for v in found[-1] if v))
    return value if 1 <= value <= 10 else None


def parse_verdict(text: str | None) -> str | None:
    found = _VERDICT.findall(text or "")
    return found[-1] if found else None


def question_of(row: dict[str, Any]) -> str:
    """The conversation before the answer: the last user turn alone, or every turn labelled when there are several."""
    turns = row.get("prompt") or []
    if len(turns) == 1:
        return str(turns[0].get("content", ""))
    return "\n".join(f"{t.get('role')}: {t.get('content', '')}" for t in turns)


def reference_text(row: dict[str, Any]) -> str | None:
    ref = row.get("reference")
    return ref.get("chosen") if isinstance(ref, dict) else ref


def combine(first: str, second_swapped: str) -> str:
    """The verdict of A vs B from the two orders: the second was asked with B shown first, so its A means B."""
    second = {"A": "B", "B": "A", "C": "C"}[second_swapped]
    return first if first == second else "C"


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The 95% Wilson score interval of a proportion (ties count half a win)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)

"""GSM8K for GRPO: a system prompt asking for <reasoning>/<answer>, an optional one-shot example, and the numeric
answer taken from after `####` ("1,200" -> "1200"). Rows without a usable number are dropped (and counted)."""

from __future__ import annotations

import re
from typing import Any

SYSTEM_PROMPT = """Respond in the following format:

<reasoning>
...
</reasoning>
<answer>
...
</answer>"""

# One worked example in the target format; the question is ours, the format is what the rewards score.
ONE_SHOT_QUESTION = "A box holds 6 pencils. How many pencils are in 4 boxes?"
ONE_SHOT_ANSWER = """<reasoning>
Each box holds 6 pencils and there are 4 boxes, so 6 * 4 = 24 pencils.
</reasoning>
<answer>
24
</answer>"""

_NUMBER = re.compile(r"^[-+]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?$")


def normalize_number(text: str | None) -> str | None:
    """'1,000' -> '1000', '72.0' -> '72', '$5' -> '5', '3.50' -> '3.5'; None when the text is not one number."""
    if text is None:
        return None
    t = text.strip().rstrip(".").replace("$", "").replace("%", "").strip()
    if not _NUMBER.match(t):
        return None
    t = t.replace(",", "").lstrip("+")
    if "." in t:
        t = t.rstrip("0").rstrip(".")
    return "0" if t in ("-0", "") else t


def hash_answer(text: Any) -> str | None:
    """The number after the last `####` of a GSM8K answer."""
    if not isinstance(text, str) or "####" not in text:
        return None
    return normalize_number(text.rsplit("####", 1)[1])


def to_grpo_row(question: str, answer: str, one_shot: bool = True) -> dict[str, Any]:
    prompt = [{"role": "system", "content": SYSTEM_PROMPT}]
    if one_shot:
        prompt += [{"role": "user", "content": ONE_SHOT_QUESTION}, {"role": "assistant", "content": ONE_SHOT_ANSWER}]
    prompt.append({"role": "user", "content": question})
    return {"prompt": prompt, "question": question, "answer": answer}

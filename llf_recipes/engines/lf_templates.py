"""LLaMA-Factory's chat templates, loaded without changing them for the rest of the process.

`get_template_and_fix_tokenizer` returns the registered template object itself and writes the run's
`default_system`, tool formatter and thinking flags into it. The registry is module-level, so a second model loaded
in the same process (`eval` over several runs, `generate` after `ask`) would inherit the first one's system prompt.
Inside `private_templates()` every lookup hands out a copy; the registry is put back as it was on leaving.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def private_templates() -> Iterator[None]:
    """Load models and templates inside this block: what LLaMA-Factory sets on a template stays with that load."""
    from llamafactory.data.template import TEMPLATES

    registered = dict(TEMPLATES)
    # The loader only reassigns attributes of the template, so a shallow copy keeps the registered one intact.
    TEMPLATES.update({name: copy.copy(template) for name, template in registered.items()})
    try:
        yield
    finally:
        TEMPLATES.update(registered)


def template_for(tokenizer: Any, data_args: Any) -> Any:
    """LLaMA-Factory's template for `data_args` (tokenizer fixed as it does), a copy private to this caller."""
    from llamafactory.data import get_template_and_fix_tokenizer

    with private_templates():
        return get_template_and_fix_tokenizer(tokenizer, data_args)


def chat_model(config: dict[str, Any]) -> Any:
    """LLaMA-Factory's ChatModel for `config`, with a template private to this load."""
    from llamafactory.chat import ChatModel  # heavy: torch and transformers

    with private_templates():
        return ChatModel(config)

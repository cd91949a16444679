"""An interactive chat with a run's model through LLaMA-Factory's own ChatModel (its template and streaming
generation), in this process: the engine's output goes to the run's `llf-chat.log`, the terminal shows the
conversation alone; `exit`, end of input (Ctrl-D) and Ctrl-C end it without a traceback."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError

HELP = "type exit or press Ctrl-D to quit, clear to forget the conversation"


def load(config: dict[str, Any], log: Path) -> Any:
    from llf_recipes.console import engine_failure, output_to

    try:
        with output_to(log):
            from llf_recipes.engines.lf_templates import chat_model

            return chat_model(config)
    except (KeyboardInterrupt, LlfError):
        raise
    except Exception as exc:  # noqa: BLE001 - the engine's failure, reported with its log
        raise engine_failure(log, "the model did not load", exc, "chat") from None


def converse(model: Any, log: Path, read=input) -> int:
    """The loop: 0 on `exit` or end of input, 130 on Ctrl-C."""
    from llf_recipes.console import output_to

    terminal = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", closefd=True)
    messages: list[dict[str, str]] = []
    try:
        while True:
            try:
                query = read("\nUser: ")
            except EOFError:
                print()
                return 0
            if query.strip() == "exit":
                return 0
            if query.strip() == "clear":
                messages = []
                print("(conversation forgotten)")
                continue
            messages.append({"role": "user", "content": query})
            print("Assistant: ", end="", flush=True)
            answer = ""
            with output_to(log):  # the engine's warnings to the log; the answer to the terminal
                for piece in model.stream_chat(messages):
                    terminal.write(piece)
                    terminal.flush()
                    answer += piece
            print()
            messages.append({"role": "assistant", "content": answer})
    except KeyboardInterrupt:
        print(flush=True)
        return 130
    finally:
        with contextlib.suppress(OSError):
            terminal.close()

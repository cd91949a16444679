"""The process `serve` runs: LLaMA-Factory's own OpenAI-compatible app (`llamafactory-cli api`), behind a check of
each chat request that refuses, with HTTP 400 before any generation starts, what the app would otherwise answer
wrongly: `stream` with `n` > 1 (it fails after the event stream has begun, leaving an empty 200 and a traceback),
`temperature` 0 with `n` > 1 (it would sample at temperature 1: greedy decoding has one answer), and `max_tokens`
below 1 (it would generate up to the model's limit).

Usage: python -m llf_recipes.serve_app CONFIG.yaml (with API_HOST, API_PORT, API_KEY, API_MODEL_NAME set as for
`llamafactory-cli api`)."""

from __future__ import annotations

import json
import os
import sys

CHAT_PATH = "/v1/chat/completions"


def refusal(body: object) -> str | None:
    """Why a chat completion request is refused, or None."""
    if not isinstance(body, dict):
        return None
    n = body.get("n", 1)
    many = isinstance(n, int) and not isinstance(n, bool) and n > 1
    if many and body.get("stream"):
        return "n > 1 cannot be streamed: ask for one answer per streamed request, or set stream to false"
    temperature = body.get("temperature")
    if many and isinstance(temperature, (int, float)) and temperature == 0:
        return "temperature 0 decodes greedily, which gives one answer: set n to 1, or a temperature above 0"
    if isinstance(n, int) and not isinstance(n, bool) and n < 1:
        return "n must be at least 1"
    tokens = body.get("max_tokens")
    if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens < 1:
        return "max_tokens must be at least 1 (leave it out for the server's default)"
    return None


class RequestCheck:
    """ASGI middleware: reads a chat request's body, answers 400 when `refusal` says so, else replays the body."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != CHAT_PATH:
            return await self.app(scope, receive, send)
        key = os.getenv("API_KEY")
        if key and dict(scope.get("headers") or []).get(b"authorization") != f"Bearer {key}".encode():
            return await self.app(scope, receive, send)  # the app answers 401 first
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, receive, send)
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        try:
            why = refusal(json.loads(raw))
        except ValueError:
            why = None  # the app's own validation answers a body that is not JSON
        if why is not None:
            payload = json.dumps({"detail": why}).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload})
            return None
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def main(argv: list[str]) -> int:
    import uvicorn
    from llamafactory.api.app import create_app
    from llamafactory.chat import ChatModel

    sys.argv = [sys.argv[0], *argv]  # ChatModel() reads its config file from the command line, as the CLI's does
    app = create_app(ChatModel())
    app.add_middleware(RequestCheck)
    uvicorn.run(app, host=os.getenv("API_HOST", "127.0.0.1"), port=int(os.getenv("API_PORT", "8000")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

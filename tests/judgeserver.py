"""A local stand-in for an OpenAI-compatible judge: POST /v1/chat/completions answered with fixed verdicts.

The reply depends only on the words in the prompt's answers, so a test knows what the judge says:
  single grading: an answer holding GOOD gets [[9]], BAD [[2]], FLAKY [[7]] after one HTTP 500, SLOW [[5]] after one
  reply that takes longer than the client's timeout, JUNK a reply without a grade (malformed);
  pairwise: the answer holding GOOD wins whichever position it is in; when a prompt holds BIASED the judge always
  says [[A]], whatever the order (a position bias the swap must cancel).
`requests` counts every POST, `by_prompt` the POSTs per prompt text; `api_key` (when set) must come as a bearer token.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

SLOW_S = 1.5


class JudgeServer:
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests = 0
        self.by_prompt: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": "bad key"})
                prompt = body["messages"][-1]["content"]
                with server.lock:
                    server.requests += 1
                    seen = server.by_prompt.get(prompt, 0)
                    server.by_prompt[prompt] = seen + 1
                status, reply, delay = server.verdict(prompt, seen)
                if delay:
                    time.sleep(delay)
                if status != 200:
                    return self._send(status, {"error": "overloaded"})
                self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": reply}}]})

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (a timeout)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def verdict(prompt: str, seen: int) -> tuple[int, str, float]:
        if "Assistant A's Answer" in prompt:
            if "BIASED" in prompt:
                return 200, "Both fine, but the first reads better. [[A]]", 0
            a = re.search(r"Assistant A's Answer\]\n(.*?)\n\[The End", prompt, re.DOTALL).group(1)
            return 200, "Verdict: [[A]]" if "GOOD" in a else "Verdict: [[B]]", 0
        answer = prompt.split("[The Start of Assistant's Answer]\n", 1)[1]
        if "FLAKY" in answer and seen == 0:
            return 500, "", 0
        if "SLOW" in answer and seen == 0:
            return 200, "Rating: [[5]]", SLOW_S
        for word, grade in (("GOOD", 9), ("BAD", 2), ("FLAKY", 7), ("SLOW", 5)):
            if word in answer:
                return 200, f"The answer is judged. Rating: [[{grade}]]", 0
        return 200, "I would rather not grade this.", 0

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

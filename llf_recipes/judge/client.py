"""Calls to a judge model behind an OpenAI-compatible chat-completions endpoint: bounded concurrency, retries with
exponential backoff on HTTP 429/5xx, timeouts and dropped connections, and a cache file so a rerun pays only for
prompts it has not asked before."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from llf_recipes.errors import LlfError

RETRY_STATUS = (408, 409, 429)


@dataclass
class Endpoint:
    url: str  # the base URL, e.g. http://127.0.0.1:8000/v1
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 1.0
    concurrency: int = 4
    max_tokens: int = 512

    @property
    def completions_url(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else f"{base}/chat/completions"


@dataclass
class Stats:
    calls: int = 0  # requests answered by the endpoint
    cached: int = 0  # answers taken from the cache
    retried: int = 0  # attempts that failed and were tried again
    failed: int = 0  # prompts with no answer after every retry
    last_error: str = ""


@dataclass
class Judge:
    """Ask many prompts at once; `answers` keeps the order of `prompts`, None where every attempt failed."""

    endpoint: Endpoint
    cache_path: Path | None = None
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self._cache: dict[str, str] = _read_cache(self.cache_path) if self.cache_path else {}
        self._lock = threading.Lock()

    def key(self, messages: list[dict[str, str]]) -> str:
        blob = json.dumps({"model": self.endpoint.model, "messages": messages, "temperature": 0,
                           "max_tokens": self.endpoint.max_tokens}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def ask_all(self, prompts: list[list[dict[str, str]]], progress=None) -> list[str | None]:
        import httpx

        headers = {"Authorization": f"Bearer {self.endpoint.api_key}"} if self.endpoint.api_key else {}
        with httpx.Client(timeout=self.endpoint.timeout_s, headers=headers) as client, \
                ThreadPoolExecutor(max_workers=max(1, self.endpoint.concurrency)) as pool:
            futures = [pool.submit(self._ask, client, messages) for messages in prompts]
            answers = []
            for future in futures:
                answers.append(future.result())
                if progress:
                    progress(1)
        if prompts and self.stats.failed == len(prompts) and not self.stats.cached:
            raise LlfError(f"the judge at {self.endpoint.completions_url} answered none of {len(prompts)} prompts: "
                           f"{self.stats.last_error}", key="--judge-url",
                           fix="check that the server runs and serves --judge-model (curl URL/models)")
        return answers

    def _ask(self, client, messages: list[dict[str, str]]) -> str | None:
        import httpx

        key = self.key(messages)
        with self._lock:
            if key in self._cache:
                self.stats.cached += 1
                return self._cache[key]
        body = {"model": self.endpoint.model, "messages": messages, "temperature": 0,
                "max_tokens": self.endpoint.max_tokens}
        for attempt in range(self.endpoint.retries + 1):
            if attempt:
                time.sleep(self.endpoint.backoff_s * 2 ** (attempt - 1))
            try:
                response = client.post(self.endpoint.completions_url, json=body)
            except httpx.HTTPError as exc:  # timeouts, refused or dropped connections
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code == 200:
                    content = _content(response)
                    if content is not None:
                        self._remember(key, content)
                        return content
                    error = "a reply without choices[0].message.content"
                elif response.status_code >= 500 or response.status_code in RETRY_STATUS:
                    error = f"HTTP {response.status_code}"
                else:  # a wrong key, model or URL: asking again will not help
                    raise LlfError(f"the judge at {self.endpoint.completions_url} refused the request: HTTP "
                                   f"{response.status_code}: {response.text[:300]}", key="--judge-url",
                                   fix="check --judge-url, --judge-model and the API key variable")
            with self._lock:
                self.stats.last_error = error
                if attempt < self.endpoint.retries:
                    self.stats.retried += 1
        with self._lock:
            self.stats.failed += 1
        return None

    def _remember(self, key: str, content: str) -> None:
        with self._lock:
            self.stats.calls += 1
            self._cache[key] = content
            if self.cache_path:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.cache_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"key": key, "content": content}, ensure_ascii=False) + "\n")


def _content(response) -> str | None:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def _read_cache(path: Path) -> dict[str, str]:
    """Earlier answers; a torn last line (an interrupted write) is ignored."""
    cache: dict[str, str] = {}
    if not path.is_file():
        return cache
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            cache[entry["key"]] = entry["content"]
        except (ValueError, KeyError, TypeError):
            continue
    return cache

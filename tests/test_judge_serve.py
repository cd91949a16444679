"""`judge` against the project's own `serve` (llamafactory-cli api) of a tiny-model run on 127.0.0.1: every request
is answered over the real OpenAI-compatible API. The tiny model's replies are noise, so what is checked is the
bookkeeping: each answer is either graded or counted as malformed, and a rerun is answered from the cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from conftest import ROOT, assert_nothing_left
from loopback import free_port, wait_for_server
from rewardruns import ENV, reward_run  # noqa: F401 - the session fixture: an rm-stage LoRA run on the tiny model


def test_judge_through_our_own_serve(reward_run, tmp_path, cli, monkeypatch):  # noqa: F811
    port = free_port()
    argv = [sys.executable, "-m", "llf_recipes", "serve", str(reward_run), "--port", str(port), "--model-name",
            "judge", "--api-key", "sekrit", "--max-new-tokens", "12"]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    answers = tmp_path / "answers.jsonl"
    rows = [{"index": i, "prompt": [{"role": "user", "content": q}], "system": None, "reference": None,
             "answers": [a, a.upper()], "settings": {}} for i, (q, a) in enumerate([("Say hi.", "hi"), ("2+2?", "4")])]
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("SERVE_KEY", "sekrit")
    try:
        models = wait_for_server(proc, base, {"Authorization": "Bearer sekrit"})
        assert models["data"][0]["id"] == "judge"
        judge = ["judge", answers, "--judge-url", base, "--judge-model", "judge", "--judge-key-env", "SERVE_KEY",
                 "--max-tokens", "12", "--concurrency", "2", "--timeout", "120", "--no-progress"]
        code, out, err = cli(*judge)
        assert code == 0, err
        assert "judge calls: 4 sent, 0 from the cache, 0 retried, 0 failed" in out
        summary = json.loads((tmp_path / "evaluation_results.json").read_text())["answers.jsonl"]["judge"]["single"]
        assert summary["answers"] == 4 and summary["graded"] + summary["malformed"] == 4
        judged = [json.loads(line) for line in (tmp_path / "answers.judged.jsonl").read_text().splitlines()]
        assert sum(s is not None for r in judged for s in r["scores"]) == summary["graded"]
        code, out, err = cli(*judge)
        assert code == 0 and "judge calls: 0 sent, 4 from the cache" in out, err
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
    assert_nothing_left(str(reward_run / "llf-serve.yaml"))

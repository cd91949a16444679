"""`judge` against a local stand-in for an OpenAI-compatible server with fixed verdicts: grades parsed, malformed
replies counted and set aside, HTTP 500 and timeouts retried, the position swap cancelling an order bias, the cache
answering a rerun, and the summary in evaluation_results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from judgeserver import JudgeServer

FAST = ["--backoff", "0.01", "--timeout", "0.5", "--no-progress"]


def _write(path: Path, answers: list[list[str]]) -> Path:
    rows = [{"index": i, "prompt": [{"role": "user", "content": f"question {i}"}], "system": None,
             "reference": f"reference {i}", "answers": a, "settings": {"run": "", "num_return": len(a)}}
            for i, a in enumerate(answers)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def server():
    with JudgeServer(api_key="sekret") as s:
        yield s


def test_judge_grades_retries_sets_aside_malformed_and_caches(tmp_path, server, cli, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sekret")
    answers = _write(tmp_path / "answers.jsonl", [["GOOD one", "BAD one"], ["FLAKY one", "SLOW one"], ["JUNK one"]])
    argv = ["judge", answers, "--judge-url", server.url, "--judge-model", "stand-in", "--judge-key-env", "JUDGE_KEY",
            *FAST]
    code, out, err = cli(*argv)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "answers.judged.jsonl").read_text().splitlines()]
    assert [r["scores"] for r in rows] == [[9, 2], [7, 5], [None]]
    malformed = [json.loads(line) for line in (tmp_path / "answers.judged.malformed.jsonl").read_text().splitlines()]
    assert malformed == [{"index": 2, "answer": 0, "reply": "I would rather not grade this."}]
    assert "mean score 5.75 over 4 of 5 answers" in out
    assert "judge calls: 5 sent, 0 from the cache, 2 retried, 0 failed; malformed replies: 1" in out
    assert server.requests == 7  # five prompts, one HTTP 500 and one timeout asked again
    summary = json.loads((tmp_path / "evaluation_results.json").read_text())["answers.jsonl"]["judge"]["single"]
    assert summary["mean_score"] == 5.75 and summary["malformed"] == 1 and summary["graded"] == 4

    code, out, err = cli(*argv)  # the rerun asks nothing: every reply is in the cache
    assert code == 0, err
    assert server.requests == 7
    assert "judge calls: 0 sent, 5 from the cache" in out and "mean score 5.75" in out


def test_judge_pairwise_swaps_positions_and_reports_a_win_rate(tmp_path, server, cli, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sekret")
    mine = _write(tmp_path / "dpo.jsonl", [["GOOD a"], ["GOOD b"], ["BIASED c"], ["plain d"]])
    theirs = _write(tmp_path / "sft.jsonl", [["plain a"], ["plain b"], ["GOOD c"], ["GOOD d"]])
    code, out, err = cli("judge", mine, "--against", theirs, "--judge-url", server.url, "--judge-model", "m", *FAST)
    assert code == 0, err
    verdicts = {json.loads(line)["index"]: json.loads(line) for line in (tmp_path / "dpo.vs-sft.jsonl").read_text().splitlines()}
    assert {i: v["verdict"] for i, v in verdicts.items()} == {0: "A", 1: "A", 2: "C", 3: "B"}
    assert verdicts[2]["orders"] == {"AB": "A", "BA": "A"}  # the judge always picked the first: a tie, not a win
    assert server.requests == 8  # every prompt asked in both orders
    assert "win rate 0.625" in out and "2 wins, 1 losses, 1 ties (1 flipped with the order)" in out
    summary = json.loads((tmp_path / "evaluation_results.json").read_text())["dpo.jsonl"]["judge"]["vs sft.jsonl"]
    low, high = summary["win_rate_ci95"]
    assert low < 0.625 < high and summary["position_inconsistent"] == 1


def test_judge_fails_clearly(tmp_path, server, cli):
    answers = _write(tmp_path / "answers.jsonl", [["GOOD"]])
    code, _, err = cli("judge", answers, "--judge-url", server.url, "--judge-model", "m", *FAST)  # no key sent
    assert code == 2 and "refused the request: HTTP 401" in err and "Traceback" not in err
    code, _, err = cli("judge", answers, "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "m",
                       "--retries", "1", *FAST)
    assert code == 2 and "answered none of 1 prompts" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"index": 0, "answers": ["x"]}\nnot json\n')
    code, _, err = cli("judge", bad, "--judge-url", server.url, "--judge-model", "m", *FAST)
    assert code == 2 and f"{bad}:2: not a row written by llf-recipes generate" in err
    rubric = tmp_path / "rubric.j2"
    rubric.write_text("Grade {{ answer }} for {{ nonsense }}")
    code, _, err = cli("judge", answers, "--judge-url", server.url, "--judge-model", "m", "--rubric", rubric, *FAST)
    assert code == 2 and "'nonsense' is undefined" in err


def test_eval_keeps_the_judge_summary_of_a_run(tmp_path, server, cli, monkeypatch):
    from llf_recipes.eval.runs import write_results

    monkeypatch.setenv("OPENAI_API_KEY", "sekret")
    answers = _write(tmp_path / "answers.jsonl", [["GOOD"]])
    code, _, err = cli("judge", answers, "--judge-url", server.url, "--judge-model", "m", *FAST)
    assert code == 0, err
    results = tmp_path / "evaluation_results.json"
    write_results(results, {"answers.jsonl": {"test": {"perplexity": 3.0}}})  # what `eval` writes for the run
    entry = json.loads(results.read_text())["answers.jsonl"]
    assert entry["test"] == {"perplexity": 3.0} and entry["judge"]["single"]["mean_score"] == 9

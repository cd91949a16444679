"""`judge` results in the evaluation_results.json of the generating run's directory (where `eval` writes and `report`
reads) and in `report`: judged against the local stand-in judge server, the numbers on the page are recomputed here
from the judged rows themselves."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import pytest
from judgeserver import JudgeServer

from llf_recipes import manifest

pytest.importorskip("matplotlib", reason="needs the report extra (matplotlib)")
FAST = ["--backoff", "0.01", "--timeout", "5", "--no-progress"]


def _run(saves: Path, stage: str) -> Path:
    run_dir = saves / "tiny" / stage
    run_dir.mkdir(parents=True)
    manifest.write(run_dir, {"verb": "train", "status": "completed", "recipe": {"name": "tiny"}, "stage": stage,
                             "config": {"stage": stage}, "model": {"base": "base-model", "adapters": [],
                                                                   "template": "qwen"}})
    return run_dir


def _answers(path: Path, run_dir: Path, answers: list[list[str]]) -> Path:
    rows = [{"index": i, "prompt": [{"role": "user", "content": f"question {i}"}], "system": None,
             "reference": None, "answers": a, "settings": {"run": str(run_dir.resolve())}} for i, a in enumerate(answers)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _wilson(wins: float, n: int, z: float = 1.96) -> tuple[float, float]:
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _judge_table(page: str) -> list[list[str]]:
    table = re.search(r'<table class="judge">(.*?)</table>', page, re.DOTALL).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.DOTALL)[1:]
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.DOTALL)]
            for r in rows]


def test_judge_results_reach_evaluation_results_and_the_report(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sekret")
    saves = tmp_path / "saves"
    dpo, sft = _run(saves, "dpo"), _run(saves, "sft")
    generated = tmp_path / "generated"  # answers kept elsewhere: the summary still goes where eval and report look
    generated.mkdir()
    mine = _answers(generated / "dpo.jsonl", dpo, [["GOOD a", "BAD a"], ["GOOD b", "GOOD b2"], ["BIASED c", "BAD c"],
                                                ["plain d", "JUNK d"], ["GOOD e", "BAD e"]])
    theirs = _answers(generated / "sft.jsonl", sft, [["plain a"], ["plain b"], ["GOOD c"], ["GOOD d"], ["plain e"]])
    with JudgeServer(api_key="sekret") as server:
        code, _, err = cli("judge", mine, "--judge-url", server.url, "--judge-model", "stand-in", *FAST)
        assert code == 0, err
        code, _, err = cli("judge", mine, "--against", theirs, "--judge-url", server.url, "--judge-model", "stand-in",
                           *FAST)
        assert code == 0, err

    graded = [json.loads(line) for line in (generated / "dpo.judged.jsonl").read_text().splitlines()]
    scores = [s for row in graded for s in row["scores"] if s is not None]
    mean = sum(scores) / len(scores)
    verdicts = [json.loads(line)["verdict"] for line in (generated / "dpo.vs-sft.jsonl").read_text().splitlines()]
    wins, n = verdicts.count("A") + 0.5 * verdicts.count("C"), len(verdicts)
    low, high = _wilson(wins, n)
    assert len(scores) == 7 and n == 5 and 0 < wins < n  # something to average, malformed and ties included

    assert not (generated / "evaluation_results.json").exists()
    entry = json.loads((saves / "tiny" / "evaluation_results.json").read_text())["tiny/dpo"]
    assert entry["model_path"] == str(dpo.resolve())
    assert entry["judge"]["single"]["mean_score"] == pytest.approx(mean, abs=1e-4)
    pairwise = entry["judge"]["vs sft.jsonl"]
    assert pairwise["win_rate"] == pytest.approx(wins / n, abs=1e-4)
    assert pairwise["win_rate_ci95"] == pytest.approx([low, high], abs=1e-4)

    code, _, err = cli("report", saves / "tiny", "-o", tmp_path / "report.html")
    assert code == 0, err
    rows = {(r[0], r[1]): r for r in _judge_table((tmp_path / "report.html").read_text(encoding="utf-8"))}
    single, versus = rows[("tiny/dpo", "single answers")], rows[("tiny/dpo", "vs sft.jsonl")]
    assert single[2] == "stand-in" and float(single[3]) == pytest.approx(mean, rel=1e-3)
    assert single[6] == f"{len(scores)} of 10" and single[7] == "3"  # replies without a grade, set aside
    assert float(versus[3]) == pytest.approx(wins / n, rel=1e-3)
    shown_low, shown_high = (float(x) for x in versus[4].split(" – "))
    assert (shown_low, shown_high) == (pytest.approx(low, rel=1e-3), pytest.approx(high, rel=1e-3))
    assert versus[5] == f"{verdicts.count('A')} / {verdicts.count('B')} / {verdicts.count('C')}"

"""A judge endpoint as the scorer of a self-play pipeline: generate -> judge -> pairs as stages of a recipe, the judge
a local stand-in on 127.0.0.1 (tests/judgeserver.py) whose grade the rubric decides, so the pairs are known."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, make_data_dir, run_cli_subprocess
from judgeserver import JudgeServer

from llf_recipes.catalog import Catalog

RECIPE = """\
description: generate, judge, pairs
vars: {model: none, judge_url: none, rubric: none}
stages:
  - {name: generate, verb: generate}
  - {name: judge, verb: judge}
  - {name: pairs, verb: pairs}
---
model: {{ model }}
template: qwen
dataset: huanhuan
dataset_dir: {{ dataset_dir }}
num_return: 4
temperature: 1.0
output_dir: {{ output_dir }}
---
answers: {{ stage_output('generate') }}/answers.jsonl
judge_url: {{ judge_url }}
judge_model: judge
rubric: {{ rubric }}
retries: 0
output_dir: {{ output_dir }}
---
scored: {{ stage_output('judge') }}/judged.jsonl
name: judged_pairs
output_dir: {{ output_dir }}
"""
# The stand-in grades an answer holding GOOD 9 and BAD 2: answers of even length are good here.
RUBRIC = "Grade the answer to: {{ question }}\n[The Start of Assistant's Answer]\n{% if answer | length is even %}GOOD{% else %}BAD{% endif %}\n"


@pytest.mark.engine
def test_a_judge_stage_scores_the_answers_the_pairs_stage_pairs(tmp_path, tiny_model):
    make_data_dir(tmp_path / "data", Catalog.discover(project_dir=ROOT), ["huanhuan"])
    (tmp_path / "selfplay-judge.yaml").write_text(RECIPE, encoding="utf-8")
    (tmp_path / "rubric.j2").write_text(RUBRIC, encoding="utf-8")
    env = {"DISABLE_VERSION_CHECK": "1", "LLF_RECIPES_CACHE": str(tiny_model.parent)}
    with JudgeServer() as server:
        argv = ["run", tmp_path / "selfplay-judge.yaml", "--smoke", "--output-root", tmp_path / "saves",
                "--set", f"model={tiny_model}", "--set", f"judge_url={server.url}", "--set",
                f"rubric={tmp_path / 'rubric.j2'}", "--set", f"dataset_dir={tmp_path / 'data'}"]
        proc = run_cli_subprocess(*argv, cwd=tmp_path, env=env, timeout=900)
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        runs = tmp_path / "saves" / "selfplay-judge"
        judged = [json.loads(x) for x in (runs / "judge" / "judged.jsonl").read_text().splitlines()]
        assert len(judged) == 4
        for row in judged:
            assert row["scores"] == [9 if len(a) % 2 == 0 else 2 for a in row["answers"]]
        asked = server.requests  # at most one per answer: the rubric leaves two distinct prompts per question
        assert sum(len(set(r["scores"])) for r in judged) <= asked <= 16
        pairs = json.loads((runs / "pairs" / "judged_pairs.json").read_text())
        mixed = [r for r in judged if len(set(r["scores"])) == 2]
        assert len(pairs) == len(mixed) >= 1
        assert all(len(p["chosen"]["content"]) % 2 == 0 and len(p["rejected"]["content"]) % 2 == 1 for p in pairs)
        assert json.loads((runs / "judge" / "llf-run.json").read_text())["metrics"]["scored"] == 16
        again = run_cli_subprocess(*argv, cwd=tmp_path, env=env, timeout=900)
        assert again.returncode == 0 and again.stdout.count("skipped, completed") == 3
        assert server.requests == asked  # nothing asked twice

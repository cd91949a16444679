"""`sft-selfplay-dpo`: SFT -> rm -> generate -> score -> pairs -> DPO, the middle steps as pipeline stages of the llf
engine (manifest, skip, resume, report), run for real on the tiny model through `llf-recipes run --smoke`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli_subprocess

RECIPE = "sft-selfplay-dpo"
STAGES = ["sft", "rm", "generate", "score", "pairs", "dpo"]
ENV = {"DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_the_dry_run_plans_the_middle_stages_as_llf_recipes_commands(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("run", RECIPE, "--smoke", "--dry-run", "--json")
    assert code == (1 if any(p["input_problems"] for p in json.loads(out)) else 0), err
    plans = {p["stage"]: p for p in json.loads(out)}
    assert list(plans) == STAGES
    assert {s: plans[s]["engine"] for s in STAGES} == {"sft": "llamafactory", "rm": "llamafactory", "generate": "llf",
                                                       "score": "llf", "pairs": "llf", "dpo": "llamafactory"}
    generate = plans["generate"]["nodes"][0]["argv"]
    assert generate[1:4] == ["-m", "llf_recipes", "generate"] and generate[4] == "saves/smoke/sft-selfplay-dpo/sft"
    assert generate[generate.index("--num-return") + 1] == "4" and generate[generate.index("--limit") + 1] == "4"
    assert generate[generate.index("--output") + 1] == "saves/smoke/sft-selfplay-dpo/generate/answers.jsonl"
    score = plans["score"]["nodes"][0]["argv"]
    assert score[4] == "saves/smoke/sft-selfplay-dpo/generate/answers.jsonl"
    assert score[score.index("--reward-model") + 1] == "saves/smoke/sft-selfplay-dpo/rm"
    assert plans["score"]["needs"] == ["generate", "rm"] and plans["dpo"]["needs"] == ["pairs", "sft"]
    assert plans["dpo"]["config"]["dataset_dir"] == "saves/smoke/sft-selfplay-dpo/pairs"


def test_validate_takes_the_pairs_folder_an_earlier_stage_writes_as_a_dataset_dir(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("validate", RECIPE, "--hostfile", "1gpu")
    assert code == 0 and "dataset-dir-missing" not in err and "valid" in out, err
    # a folder nothing in the recipe writes is still named
    code, out, err = cli("validate", RECIPE, "--hostfile", "1gpu", "--set", "dataset_dir=nowhere")
    assert "[sft-selfplay-dpo/sft] dataset_dir: dataset_dir 'nowhere' does not exist" in err, err
    assert "[sft-selfplay-dpo/dpo] dataset_dir" not in err


def test_every_stage_key_is_an_option_of_its_verb():
    """The llf engine's key table and the verbs' own parsers agree (a renamed option cannot go unnoticed)."""
    import argparse

    from llf_recipes.cli import build_parser
    from llf_recipes.engines.llf import VERBS

    for name, verb in VERBS.items():
        sub = next(a for a in build_parser(name)._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
        flags = {f for a in parser._actions for f in a.option_strings}
        positional = [a.dest for a in parser._actions if not a.option_strings]
        for key, option in verb.options.items():
            assert option.flag in flags if option.flag else len(positional) == 1, (name, key)
        assert set(verb.outputs) | set(verb.fixed) | {verb.data_dir_flag or "--help"} <= flags, name


@pytest.mark.parametrize("setting, message", [
    ("generate.temprature=0.7", "temprature: is not a key of a `generate` stage"),
    ("generate.num_return=many", "num_return: 'many' is not an int"),
    ("~pairs.name", "name: a `pairs` stage needs it"),
])
def test_a_middle_stage_key_is_checked_before_anything_runs(cli, tmp_path, monkeypatch, setting, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("run", RECIPE, "--smoke", "--dry-run", "--set", setting)
    assert code == 1 and message in err and "validation error(s)" in err and out == ""
    if "temprature" in setting:
        assert "did you mean 'temperature'?" in err
    assert not (tmp_path / "saves").exists()


def test_an_unscoped_set_for_the_training_stages_leaves_the_middle_stages_alone(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("run", RECIPE, "--smoke", "--dry-run", "--json", "--set", "max_steps=2")
    assert code == (1 if any(p["input_problems"] for p in json.loads(out)) else 0), err
    plans = {p["stage"]: p for p in json.loads(out)}
    assert plans["sft"]["config"]["max_steps"] == 2 and plans["dpo"]["config"]["max_steps"] == 2
    assert "max_steps" not in plans["generate"]["config"] and "max_steps" not in plans["pairs"]["config"]


def _run(root: Path, env: dict, *extra: str):
    proc = run_cli_subprocess("run", RECIPE, "--smoke", "--output-root", root / "saves", "--set",
                              f"dataset_dir={root / 'data'}", *extra, cwd=root, env=env, timeout=1500)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _manifests(runs: Path) -> dict[str, dict]:
    return {s: json.loads((runs / s / "llf-run.json").read_text()) for s in STAGES}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("selfplay")
    env = {**ENV, "LLF_RECIPES_CACHE": str(tiny_model.parent)}
    proc = run_cli_subprocess("prepare", "--recipe", RECIPE, "--sample", "--data-dir", root / "data", env=env)
    assert proc.returncode == 0, proc.stderr
    first = _run(root, env)
    return root, env, first, root / "saves" / RECIPE


@pytest.mark.engine
def test_the_smoke_run_trains_sft_and_dpo_on_the_models_own_scored_answers(pipeline, tiny_model):
    root, _, first, runs = pipeline
    data = _manifests(runs)
    assert {s: data[s]["status"] for s in STAGES} == dict.fromkeys(STAGES, "completed")
    assert "6 of 6 stage(s) completed" in first.stdout
    assert (runs / "sft" / "adapter_model.safetensors").is_file()
    assert data["generate"]["engine"]["name"] == "llf" and data["generate"]["verb"] == "generate"
    # generate: 4 prompts (smoke), 4 sampled answers each, from the sft adapter
    rows = [json.loads(x) for x in (runs / "generate" / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["answers"]) == 4 for r in rows)
    assert rows[0]["settings"]["model"].endswith(str((runs / "sft").resolve()))
    assert data["generate"]["metrics"] == {"prompts": 4, "answers": 16}
    assert "[3/6] generate: step 4/4" in first.stderr  # its progress, read from the steps log it wrote
    # score: one reward per answer from the rm stage's value head
    scored = [json.loads(x) for x in (runs / "score" / "scored.jsonl").read_text().splitlines()]
    assert [len(r["scores"]) for r in scored] == [4, 4, 4, 4]
    assert all(isinstance(s, float) for r in scored for s in r["scores"])
    # pairs: best vs worst per prompt, registered with ranking: true where the dpo stage reads it
    info = json.loads((runs / "pairs" / "dataset_info.json").read_text())
    assert info["selfplay_pairs"]["ranking"] is True
    pairs = json.loads((runs / "pairs" / "selfplay_pairs.json").read_text())
    assert pairs and data["pairs"]["metrics"]["pairs"] == len(pairs)
    by_index = {r["index"]: r for r in scored}
    for pair in pairs:
        row = by_index[pair["index"]]
        assert pair["chosen"]["content"] == row["answers"][row["scores"].index(max(row["scores"]))]
        assert pair["rejected"]["content"] == row["answers"][row["scores"].index(min(row["scores"]))]
    from llf_loader import loaded_rows

    assert loaded_rows(tiny_model, runs / "pairs", "selfplay_pairs", "dpo", root / "lf") == len(pairs)
    # dpo: trained on those pairs, continuing the sft adapter
    assert data["dpo"]["config"]["dataset"] == "selfplay_pairs"
    assert data["dpo"]["datasets"]["selfplay_pairs"]["file"] == str((runs / "pairs" / "selfplay_pairs.json").resolve())
    state = json.loads((runs / "dpo" / "trainer_state.json").read_text())
    assert state["global_step"] >= 1 and (runs / "dpo" / "adapter_model.safetensors").is_file()


@pytest.mark.engine
def test_a_rerun_skips_every_stage_and_a_generate_change_reruns_only_what_follows(pipeline):
    root, env, _, runs = pipeline
    before = _manifests(runs)
    again = _run(root, env)
    for i, stage in enumerate(STAGES, 1):
        assert f"[{i}/6] stage {stage}: skipped, completed" in again.stdout
    assert _manifests(runs) == before
    changed = _run(root, env, "--set", "generate.temperature=0.7")
    after = _manifests(runs)
    for stage in ("sft", "rm"):
        assert after[stage]["finished_at"] == before[stage]["finished_at"] and f"stage {stage}: skipped" in changed.stdout
    for stage in ("generate", "score", "pairs", "dpo"):
        assert after[stage]["attempt"] > before[stage]["attempt"] and after[stage]["status"] == "completed"
    rows = [json.loads(x) for x in (runs / "generate" / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["settings"]["temperature"] for r in rows} == {0.7}


@pytest.mark.engine
def test_the_report_lists_the_middle_stages(pipeline):
    root, env, _, runs = pipeline
    proc = run_cli_subprocess("report", runs, cwd=root, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    page = (runs / "report.html").read_text()
    section = page[page.index('id="stages"'):]
    for stage in STAGES:
        assert f"{RECIPE}/{stage}</td>" in section
    assert "prompts 4, answers 16" in section and "pairs " in section


@pytest.mark.engine
def test_an_interrupted_generate_stage_continues_the_rows_it_wrote(pipeline):
    """Ctrl-C while the stage generates (SIGINT to `run`'s process group, as a terminal sends it); the rerun with the
    same settings continues after the last finished prompt."""
    root, env, _, runs = pipeline
    answers = runs / "generate" / "answers.jsonl"
    answers.unlink()  # so that only rows of the run below are watched for
    args = ["--set", "generate.limit=24", "--stage", "generate"]
    argv = [sys.executable, "-m", "llf_recipes", "run", RECIPE, "--smoke", "--output-root", str(root / "saves"),
            "--set", f"dataset_dir={root / 'data'}", *args]
    proc = subprocess.Popen(argv, cwd=root, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if answers.is_file() and answers.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert json.loads((runs / "generate" / "llf-run.json").read_text())["status"] == "interrupted"
    kept = answers.read_bytes()[: answers.read_bytes().rfind(b"\n") + 1]
    done = kept.count(b"\n")
    assert 2 <= done < 24
    again = _run(root, env, *args)
    assert "continuing the rows it wrote" in again.stdout
    assert f"generated answers to {24 - done} of 24 prompts, {done} already there" in \
        (runs / "generate" / "llf-generate.log").read_text()
    assert answers.read_bytes().startswith(kept) and len(answers.read_bytes().splitlines()) == 24
    rows = [json.loads(x) for x in answers.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(24))
    assert json.loads((runs / "generate" / "llf-run.json").read_text())["status"] == "completed"


def test_a_pairs_stage_with_its_own_output_dir_is_found_where_it_writes(tmp_path, monkeypatch, catalog):
    """The stage that trains on the pairs waits for them in the directory the pairs stage really writes (its own
    output_dir, not OUTPUT_ROOT/RECIPE/pairs), and reads that stage's manifest there."""
    from llf_recipes import manifest
    from llf_recipes.engines import stages
    from llf_recipes.errors import LlfError
    from llf_recipes.hardware import cpu_layout
    from llf_recipes.pipeline import check_inputs, check_registered
    from llf_recipes.render import Overrides, Renderer

    monkeypatch.chdir(tmp_path)
    recipe = catalog.recipe(RECIPE)
    mine = tmp_path / "elsewhere" / "my-pairs"
    overrides = Overrides.parse([f"output_root={tmp_path / 'saves'}", f"pairs.output_dir={mine}"], recipe)
    renderer = Renderer(recipe, cpu_layout(), overrides, catalog)
    pairs, _ = stages.plan(renderer.render("pairs"), catalog)
    dpo, _ = stages.plan(renderer.render("dpo"), catalog)
    assert pairs.config_path.parent == mine and dpo.rendered.config["dataset_dir"] == str(mine)
    # run together: the dataset is registered by the pairs stage first, so its check waits
    assert check_registered(dpo, {"pairs", "dpo"}) is False
    # run alone: the pairs stage's manifest is read in its own directory
    with pytest.raises(LlfError, match=f"stage 'pairs' in {mine}, but it has no run manifest"):
        check_inputs(dpo, {"sft"})
    manifest.write(mine, {"status": "completed"})
    check_inputs(dpo, {"sft"})
    with pytest.raises(LlfError, match="'selfplay_pairs', which is not registered"):
        check_registered(dpo)

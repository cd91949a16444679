"""`run --dry-run` makes the checks `run` stops on before launch (earlier stages completed, datasets registered) and
says, per stage, whether it would run, skip or resume; the stage command it suggests keeps the run's options."""

import json
from pathlib import Path

from llf_recipes import manifest
from llf_recipes.engines import stages
from llf_recipes.hardware import cpu_layout
from llf_recipes.pipeline import fingerprint, identity
from llf_recipes.render import Overrides, Renderer


def test_a_dry_run_reports_unregistered_data(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("run", "zhihu", "--smoke", "--dry-run")
    assert code == 1, err  # a plan is printed, what run would stop on is named in it, and it exits 1
    assert "# inputs: 2 problem(s) `run` would stop on:" in out
    assert "stage sft reads dataset 'zhihu_sft', which is not registered in data/dataset_info.json" in out
    assert "inputs: earlier stages and datasets are in place" not in out
    code, out, err = cli("run", "zhihu", "--smoke", "--dry-run", "--json")
    sft, dpo = json.loads(out)
    assert "'zhihu_sft', which is not registered" in sft["input_problems"][0]
    assert "'zhihu_rlhf', which is not registered" in dpo["input_problems"][0]


def test_a_dry_run_says_what_each_stage_would_do(cli, catalog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("prepare", "--recipe", "zhihu", "--sample-data")[0] == 0
    code, out, err = cli("run", "zhihu", "--smoke", "--dry-run")
    assert code == 0, err
    assert "# inputs: earlier stages and datasets are in place" in out
    assert out.count("would run: first run") == 2
    # sft completed with exactly this config and data: a run would skip it
    recipe = catalog.recipe("zhihu")
    overrides = Overrides.parse(["deepspeed=none", "output_root=saves/smoke"], recipe)
    code, plan_out, _ = cli("run", "zhihu", "--smoke", "--dry-run", "--json")
    sft_config = json.loads(plan_out)[0]["config"]
    rendered = Renderer(recipe, cpu_layout(), overrides, catalog).render("sft")
    rendered.config = sft_config
    plan, _ = stages.plan(rendered, catalog)
    manifest.write(tmp_path / "saves/smoke/zhihu/sft", {"status": "completed", "finished_at": "today",
                                                        **fingerprint(plan, None)})
    code, out, err = cli("run", "zhihu", "--smoke", "--dry-run", "--json")
    sft, dpo = json.loads(out)
    assert (sft["action"], dpo["action"]) == ("skip", "run"), (sft["reason"], dpo["reason"])
    assert sft["reason"].startswith("completed today with the same config and data")
    code, out, err = cli("run", "zhihu", "--smoke", "--dry-run", "--force")
    assert "would run: --force" in out
    manifest.update(tmp_path / "saves/smoke/zhihu/sft", status="failed")
    code, out, err = cli("run", "zhihu", "--smoke", "--dry-run")
    assert "would run: the last attempt stopped (failed) before its first checkpoint" in out


def test_the_stage_a_partial_run_needs_is_suggested_with_the_same_options(cli, catalog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("prepare", "--recipe", "zhihu", "--sample-data")[0] == 0
    code, out, err = cli("run", "zhihu", "--from", "dpo", "--smoke", "--output-root", "my runs")
    assert code != 0
    assert "reads the output of stage 'sft' in my runs/zhihu/sft" in err
    assert "llf-recipes run zhihu --smoke --output-root 'my runs' --stage sft" in err
    code, out, err = cli("run", "zhihu", "--from=dpo", "--smoke", "--dry-run")
    assert "(llf-recipes run zhihu --smoke --stage sft)" in out


def completed_zhihu(cli, catalog, tmp_path: Path, monkeypatch) -> dict:
    """A project whose zhihu smoke stages both completed (sft first) with the config and data a run would use now, as
    their manifests record it; returns each stage's config."""
    monkeypatch.chdir(tmp_path)
    assert cli("prepare", "--recipe", "zhihu", "--sample-data")[0] == 0
    recipe = catalog.recipe("zhihu")
    overrides = Overrides.parse(["deepspeed=none", "output_root=saves/smoke"], recipe)
    _, plan_out, _ = cli("run", "zhihu", "--smoke", "--dry-run", "--json")
    configs = {p["stage"]: p["config"] for p in json.loads(plan_out)}
    renderer = Renderer(recipe, cpu_layout(), overrides, catalog)
    for name in ("sft", "dpo"):
        rendered = renderer.render(name)
        rendered.config = configs[name]
        plan, _ = stages.plan(rendered, catalog)
        manifest.write(tmp_path / f"saves/smoke/zhihu/{name}", {"status": "completed", "finished_at": f"at {name}",
                                                                 "config": configs[name], **fingerprint(plan, None)})
    return configs


def test_a_stage_reading_one_that_reruns_is_predicted_to_rerun(cli, catalog, tmp_path, monkeypatch):
    completed_zhihu(cli, catalog, tmp_path, monkeypatch)
    code, out, err = cli("run", "zhihu", "--smoke", "--dry-run", "--json")
    assert [p["action"] for p in json.loads(out)] == ["skip", "skip"], err
    # sft's config changes: it reruns, and dpo, which starts from sft's new adapter, reruns after it
    code, out, err = cli("run", "zhihu", "--smoke", "--dry-run", "--json", "--set", "sft.learning_rate=3e-4")
    sft, dpo = json.loads(out)
    assert (sft["action"], dpo["action"]) == ("run", "run"), (sft["reason"], dpo["reason"])
    assert dpo["reason"] == "stage sft runs first"
    code, out, err = cli("run", "zhihu", "--smoke", "--dry-run", "--set", "sft.learning_rate=3e-4")
    assert code == 0 and "would run: stage sft runs first" in out, err
    code, out, err = cli("run", "zhihu", "--smoke", "--dry-run", "--stage", "dpo", "--json")
    assert code == 0 and json.loads(out)[0]["action"] == "skip", err  # run alone, it reads sft as it is


def test_an_unreadable_dataset_info_is_a_problem_of_the_stage_in_json(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset_info.json").write_text("{not json", encoding="utf-8")
    code, out, err = cli("run", "zhihu", "--smoke", "--dry-run", "--json")
    assert code == 1, err
    sft, dpo = json.loads(out)
    for stage in (sft, dpo):
        assert len(stage["input_problems"]) == 1 and "cannot read data/dataset_info.json" in stage["input_problems"][0]
    code, out, err = cli("run", "zhihu", "--smoke", "--dry-run")
    assert "# inputs: 2 problem(s) `run` would stop on:" in out and "cannot read data/dataset_info.json" in out


def test_a_dry_run_counts_the_checkpoints_a_killed_attempt_left_unstamped_and_stamps_nothing(cli, catalog, tmp_path,
                                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("prepare", "--recipe", "zhihu", "--sample-data")[0] == 0
    recipe = catalog.recipe("zhihu")
    overrides = Overrides.parse(["deepspeed=none", "output_root=saves/smoke"], recipe)
    code, plan_out, _ = cli("run", "zhihu", "--smoke", "--dry-run", "--json")
    rendered = Renderer(recipe, cpu_layout(), overrides, catalog).render("sft")
    rendered.config = json.loads(plan_out)[0]["config"]
    plan, _ = stages.plan(rendered, catalog)
    current = fingerprint(plan, None)
    run_dir = tmp_path / "saves/smoke/zhihu/sft"
    # an attempt killed (SIGKILL) after two checkpoints: run stamps them as its own before deciding
    manifest.write(run_dir, {"status": "interrupted", "finished_at": "then", "lineage": "L1",
                             "identity": identity(current), **current})
    for step in (2, 4):
        (run_dir / f"checkpoint-{step}").mkdir()
        (run_dir / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (run_dir / "checkpoint-6").mkdir()  # not complete: never resumed from
    code, out, _ = cli("run", "zhihu", "--smoke", "--dry-run")
    assert code == 0 and "would resume: the last attempt stopped (interrupted); resuming from checkpoint-4" in out, out
    assert not list(run_dir.glob("checkpoint-*/llf-checkpoint.json"))  # a prediction writes nothing


def test_a_rerun_names_the_keys_data_and_stages_that_changed(cli, catalog, tmp_path, monkeypatch):
    configs = completed_zhihu(cli, catalog, tmp_path, monkeypatch)
    old_lr = configs["sft"]["learning_rate"]
    code, out, _ = cli("run", "zhihu", "--smoke", "--dry-run", "--json", "--stage", "sft",
                       "--set", "sft.learning_rate=9e-5", "--set", "sft.lora_rank=4")
    (sft,) = json.loads(out)
    assert code == 0 and sft["reason"] == (f"changed since the last run: config: learning_rate {json.dumps(old_lr)} -> 9e-05, "
                             f"lora_rank {json.dumps(configs['sft']['lora_rank'])} -> 4")
    # the data: named with its file
    name = configs["sft"]["dataset"].split(",")[0]
    data = tmp_path / "data" / json.loads((tmp_path / "data" / "dataset_info.json").read_text())[name]["file_name"]
    with open(data, "a", encoding="utf-8") as f:
        f.write("\n")
    code, out, _ = cli("run", "zhihu", "--smoke", "--dry-run", "--json", "--stage", "sft")
    (sft,) = json.loads(out)
    assert code == 0 and sft["reason"] == f"changed since the last run: dataset {name} changed ({data.resolve()})"
    # an earlier stage that ran again since: named
    manifest.update(tmp_path / "saves/smoke/zhihu/sft", finished_at="later")
    code, out, _ = cli("run", "zhihu", "--smoke", "--dry-run", "--json", "--stage", "dpo")
    (dpo,) = json.loads(out)
    assert code == 0 and dpo["reason"] == "changed since the last run: stage sft ran again"


def test_a_smoke_run_says_it_leaves_the_layout_options_aside(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.hosts").write_text("localhost slots=2\n", encoding="utf-8")
    _, out, err = cli("run", "zhihu", "--smoke", "--hostfile", "my.hosts", "--dry-run")
    assert "on 1 node x 1 CPU process" in out
    assert ("note: smoke: every stage runs as 1 CPU process on this machine; --hostfile my.hosts is not used "
            "(without --smoke the run uses it)") in err
    _, _, err = cli("run", "zhihu", "--smoke", "--gpus", "0,1", "--device", "npu", "--dry-run")
    assert "; --gpus 0,1 and --device npu are not used" in err
    _, _, err = cli("run", "zhihu", "--smoke", "--dry-run")
    assert "not used" not in err


def test_a_set_for_a_stage_the_run_leaves_out_is_noted(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, _, err = cli("run", "zhihu", "--from", "dpo", "--set", "sft.learning_rate=9e-5", "--set", "dpo.beta=0.2",
                    "--dry-run")
    assert ("note: --set sft.learning_rate=9e-5 changes nothing: stage sft does not run here (--from dpo); a stage "
            "that reads it uses its output as it is") in err
    assert "dpo.beta" not in err
    _, _, err = cli("run", "zhihu", "--stage", "sft", "--set", "~dpo.beta", "--dry-run")
    assert "note: --set ~dpo.beta changes nothing: stage dpo does not run here (--stage sft)" in err
    _, _, err = cli("run", "zhihu", "--set", "sft.learning_rate=9e-5", "--dry-run")
    assert "changes nothing" not in err

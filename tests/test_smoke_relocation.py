"""A smoke run moves every stage's output directory under saves/smoke/: later stages that name an earlier stage's
directory literally read the moved one, a stage's own logging directory goes along, and values that are not paths
(a `stage: sft` beside an `output_dir: sft`) stay as they are."""

import json

from conftest import make_data_dir

HEADER = """description: two stages that name their directories literally
stages:
  - name: first
  - name: second
"""
STAGE = """model_name_or_path: Qwen/Qwen2.5-0.5B-Instruct
stage: sft
do_train: true
finetuning_type: lora
dataset: huanhuan
dataset_dir: data
template: qwen
"""


def plan(cli, tmp_path, monkeypatch, catalog, first: str, second: str) -> dict:
    monkeypatch.chdir(tmp_path)
    make_data_dir(tmp_path / "data", catalog, ["huanhuan"])
    (tmp_path / "moved.yaml").write_text(f"{HEADER}---\n{STAGE}{first}---\n{STAGE}{second}", encoding="utf-8")
    code, out, err = cli("run", "moved.yaml", "--smoke", "--dry-run", "--json")
    assert code == 0, err
    return {p["stage"]: p["config"] for p in json.loads(out)}


def test_only_path_arguments_follow_a_moved_directory(cli, tmp_path, monkeypatch, catalog):
    configs = plan(cli, tmp_path, monkeypatch, catalog, "output_dir: sft\n",
                   "adapter_name_or_path: sft,other/adapter\noutput_dir: sft2\n")
    second = configs["second"]
    assert second["stage"] == "sft" and second["template"] == "qwen" and second["dataset_dir"] == "data"
    assert second["adapter_name_or_path"] == "saves/smoke/moved/first,other/adapter"
    assert second["output_dir"] == "saves/smoke/moved/second"


def test_a_stage_s_own_logging_directory_moves_with_its_output(cli, tmp_path, monkeypatch, catalog):
    configs = plan(cli, tmp_path, monkeypatch, catalog,
                   "output_dir: saves/x/first\nlogging_dir: saves/x/first/runs\n",
                   "adapter_name_or_path: saves/x/first/checkpoint-5\noutput_dir: saves/x/second\n")
    assert configs["first"]["logging_dir"] == "saves/smoke/moved/first/runs"
    assert configs["second"]["adapter_name_or_path"] == "saves/smoke/moved/first/checkpoint-5"

"""Every validation rule: a bad config, and an error that names the rule, the key and a fix."""

import pytest

from llf_recipes.schema import keys_for, load_snapshot
from llf_recipes.schema.rules import RULES, LaunchInfo, validate_config

DATASETS = {
    "sft_data": {"file_name": "a.jsonl", "ranking": False, "columns": {"prompt": "instruction", "response": "output"}},
    "pairs": {"file_name": "b.jsonl", "ranking": True, "columns": {"prompt": "instruction", "chosen": "c", "rejected": "r"}},
    "kto_data": {"file_name": "c.jsonl", "columns": {"prompt": "instruction", "response": "output", "kto_tag": "label"}},
}
BASE = {"model_name_or_path": "m", "stage": "sft", "do_train": True, "finetuning_type": "lora", "dataset": "sft_data",
        "template": "qwen", "output_dir": "out", "learning_rate": 1e-4}


def findings(extra=None, drop=(), verb="train", torchrun=False, ds_json=None, allow=frozenset()):
    cfg = {**BASE, **(extra or {})}
    for k in drop:
        cfg.pop(k, None)
    return validate_config(cfg, verb, stage="s", datasets=DATASETS, launch=LaunchInfo(torchrun), deepspeed_json=ds_json, allow=allow)


def one(rule, **kw):
    hits = [f for f in findings(**kw) if f.rule == rule]
    assert hits, f"rule {rule} did not fire: {findings(**kw)}"
    return hits[0]


def test_snapshot_sizes():
    assert load_snapshot()["llamafactory"] == "0.9.5"
    assert len(keys_for("train")) == 346 and len(keys_for("export")) == 211 and len(keys_for("chat")) == 211


def test_clean_config_passes():
    assert findings() == []
    assert findings(extra={"stage": "ppo", "reward_model": "rm"}) == []  # the engine is checked per stage (test_engines)


def test_unknown_key_suggests_nearest():
    f = one("unknown-key", extra={"lerning_rate": 1e-4})
    assert f.key == "lerning_rate" and "learning_rate" in f.fix


def test_training_key_in_export_config():
    cfg = {"model_name_or_path": "m", "adapter_name_or_path": "a", "template": "qwen", "export_dir": "e", "learning_rate": 1e-4}
    fs = validate_config(cfg, "export")
    assert [(f.rule, f.key) for f in fs] == [("unknown-key", "learning_rate")]
    assert "training key" in fs[0].message


def test_wrong_type():
    f = one("wrong-type", extra={"learning_rate": "1e-4"})
    assert f.key == "learning_rate" and "float" in f.message
    assert one("wrong-type", extra={"lora_rank": 8.5}).key == "lora_rank"
    assert one("wrong-type", extra={"do_train": "yes"}).key == "do_train"


@pytest.mark.parametrize("key, bad, good", [
    ("stage", "sfft", "sft"), ("finetuning_type", "lorra", "lora"), ("pref_loss", "sigmod", "sigmoid"),
    ("flash_attn", "fa9", None), ("quantization_method", "bnbb", "bnb"), ("quantization_type", "nf5", None),
    ("template", "qwenn", "qwen"), ("report_to", "wandbb", "wandb"), ("lr_scheduler_type", "cosin", "cosine"),
])
def test_invalid_choice(key, bad, good):
    f = one("invalid-choice", extra={key: bad})
    assert f.key == key and repr(bad) in f.message
    if good:
        assert repr(good) in f.fix


def test_report_to_list_items_are_checked():
    assert one("invalid-choice", extra={"report_to": ["wandb", "tensorbord"]}).key == "report_to"


def test_quantization_needs_lora_or_oft():
    f = one("quantization-needs-adapter", extra={"quantization_bit": 4, "finetuning_type": "full"})
    assert f.key == "quantization_bit" and "lora" in f.fix
    assert not [x for x in findings(extra={"quantization_bit": 4, "finetuning_type": "oft"}) if x.rule == "quantization-needs-adapter"]


def test_ranking_mismatch_both_ways():
    f = one("ranking-mismatch", extra={"stage": "dpo"})
    assert f.key == "dataset" and "ranking: true" in f.message
    f = one("ranking-mismatch", extra={"stage": "sft", "dataset": "pairs"})
    assert f.key == "dataset" and "ranked" in f.message
    assert one("ranking-mismatch", extra={"stage": "rm", "dataset": "sft_data"}).key == "dataset"
    assert one("ranking-mismatch", extra={"eval_dataset": "pairs"}).key == "eval_dataset"


def test_kto_needs_tag():
    f = one("kto-needs-tag", extra={"stage": "kto", "dataset": "sft_data"})
    assert f.key == "dataset" and "kto_tag" in f.message
    assert not [x for x in findings(extra={"stage": "kto", "dataset": "kto_data"}) if x.rule == "kto-needs-tag"]


def test_ppo_needs_reward_model():
    f = one("ppo-needs-reward-model", extra={"stage": "ppo"})
    assert f.key == "reward_model"


def test_ppo_on_the_main_engine_is_refused():
    from llf_recipes import engines
    from llf_recipes.validation import engine_findings

    (f,) = engine_findings(engines.get("llamafactory"), {"stage": "ppo"}, "train", "s")
    assert f.rule == "ppo-needs-old-trl" and f.severity == "error" and "llamafactory-ppo" in f.fix
    assert engine_findings(engines.get("llamafactory-ppo"), {"stage": "ppo"}, "train", "s") == []


def test_deepspeed_needs_torchrun():
    f = one("deepspeed-needs-torchrun", extra={"deepspeed": "ds.json"})
    assert f.key == "deepspeed" and "FORCE_TORCHRUN=1" in f.fix
    assert not [x for x in findings(extra={"deepspeed": "ds.json"}, torchrun=True) if x.rule == "deepspeed-needs-torchrun"]


def test_neat_packing_outside_sft():
    assert one("neat-packing-sft-only", extra={"stage": "pt", "neat_packing": True}).key == "neat_packing"


def test_unsloth_with_zero3():
    ds = {"zero_optimization": {"stage": 3}}
    f = one("zero3-conflict", extra={"use_unsloth": True, "deepspeed": "ds.json"}, torchrun=True, ds_json=ds)
    assert f.key == "use_unsloth" and "z2" in f.fix
    ok = findings(extra={"use_unsloth": True, "deepspeed": "ds.json"}, torchrun=True, ds_json={"zero_optimization": {"stage": 2}})
    assert not [x for x in ok if x.rule == "zero3-conflict"]


@pytest.mark.parametrize("loss", ["hinge", "ipo", "kto_pair"])
def test_pref_loss_that_silently_trains_sigmoid(loss):
    f = one("pref-loss-fallback", extra={"stage": "dpo", "dataset": "pairs", "pref_loss": loss})
    assert f.key == "pref_loss" and f.severity == "error" and "--allow pref-loss-fallback" in f.fix
    warned = [x for x in findings(extra={"stage": "dpo", "dataset": "pairs", "pref_loss": loss}, allow={"pref-loss-fallback"})
              if x.rule == "pref-loss-fallback"]
    assert warned and warned[0].severity == "warning"


def test_spaces_under_torchrun():
    f = one("space-under-torchrun", extra={"output_dir": "/my runs/out"}, torchrun=True)
    assert f.key == "output_dir"
    assert not [x for x in findings(extra={"output_dir": "/my runs/out"}) if x.rule == "space-under-torchrun"]


def test_undefined_dataset():
    f = one("undefined-dataset", extra={"dataset": "sft_dat"})
    assert f.key == "dataset" and "'sft_data'" in f.fix
    assert "defines 'missing' in " in one("undefined-dataset", extra={"dataset": "sft_data,missing"}).message


def test_undefined_dataset_names_the_dataset_info_read(tmp_path, monkeypatch):
    """It says which dataset_info.json was read, or that there is none and dataset_dir should point at one."""
    monkeypatch.chdir(tmp_path)
    f = one("undefined-dataset", extra={"dataset": "identity"})
    assert "data/dataset_info.json does not exist" in f.message and "point dataset_dir at the folder" in f.fix, f
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset_info.json").write_text("{}")
    f = one("undefined-dataset", extra={"dataset": "identity"})
    assert "in data/dataset_info.json or dataset_info.d/" in f.message and "point dataset_dir" not in f.fix, f


def test_a_dataset_dir_that_does_not_exist_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = one("dataset-dir-missing", extra={"dataset_dir": "../nodir"})
    assert f.severity == "warning" and f.key == "dataset_dir" and "'../nodir' does not exist" in f.message, f
    (tmp_path / "mydata").mkdir()
    assert not [x for x in findings(extra={"dataset_dir": "mydata"}) if x.rule == "dataset-dir-missing"]
    # the default folder is the one `prepare` creates: not there yet is the usual first step, not a typo
    assert not [x for x in findings(extra={"dataset_dir": "data"}) if x.rule == "dataset-dir-missing"]


def test_every_rule_is_covered_by_a_test():
    import inspect
    import sys
    from pathlib import Path

    # This file and the start-up rules' tests (tests/test_startup_rules.py) together name every rule.
    src = inspect.getsource(sys.modules[__name__]) + (Path(__file__).parent / "test_startup_rules.py").read_text()
    for rule in RULES:
        assert f'"{rule}"' in src, f"no test names rule {rule}"

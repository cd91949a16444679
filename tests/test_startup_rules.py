"""The checks LLaMA-Factory makes at start-up, as rules: each bad config names its rule, the key and a fix, and the
config without the mistake passes that rule."""

import json

import pytest

from llf_recipes import yamlio
from llf_recipes.plain_config import infer_verb
from llf_recipes.schema.deepspeed import DeepSpeedSource
from llf_recipes.schema.rules import LaunchInfo, validate_config

DATASETS = {"sft_data": {"file_name": "a.jsonl"}, "more": {"file_name": "b.jsonl"},
            "pairs": {"file_name": "c.jsonl", "ranking": True}}
BASE = {"model_name_or_path": "m", "stage": "sft", "do_train": True, "finetuning_type": "lora", "dataset": "sft_data",
        "template": "qwen", "output_dir": "out", "learning_rate": 1.0e-4, "bf16": True}
FULL = {"finetuning_type": "full"}
TORCHRUN = LaunchInfo(torchrun=True)
Z3 = {"zero_optimization": {"stage": 3}}


def run(extra=None, verb="train", launch=None, ds=None, drop=(), **kw):
    cfg = {**BASE, **(extra or {})} if verb == "train" else dict(extra or {})
    for key in drop:
        cfg.pop(key, None)
    return validate_config(cfg, verb, stage="s", datasets=DATASETS, launch=launch, deepspeed_json=ds, **kw)


CASES = [
    # (rule, key named, the bad config's extra keys, launch, DeepSpeed config)
    ("sft-only-option", "train_on_prompt", {"stage": "pt", "train_on_prompt": True}, None, None),
    ("sft-only-option", "predict_with_generate", {"stage": "pt", "predict_with_generate": True, "val_size": 0.1}, None, None),
    ("predict-needs-generate", "predict_with_generate", {"do_predict": True, "val_size": 0.1}, None, None),
    ("best-model-unsupported", "load_best_model_at_end", {"stage": "rm", "dataset": "pairs", "load_best_model_at_end": True,
                                                          "eval_strategy": "steps", "val_size": 0.1}, None, None),
    ("ppo-options", "do_train", {"stage": "ppo", "reward_model": "rm", "do_train": False}, None, None),
    ("ppo-options", "report_to", {"stage": "ppo", "reward_model": "rm", "report_to": "mlflow"}, None, None),
    ("streaming-needs-max-steps", "max_steps", {"streaming": True}, None, None),
    ("train-needs-dataset", "dataset", {"dataset": None}, None, None),
    ("eval-needs-data", "val_size", {"do_eval": True}, None, None),
    ("eval-needs-data", "val_size", {"eval_strategy": "steps", "eval_steps": 10}, None, None),
    ("generate-conflict", "compute_accuracy", {"predict_with_generate": True, "compute_accuracy": True, "val_size": 0.1}, None, None),
    ("generate-conflict", "predict_with_generate", {"predict_with_generate": True, "val_size": 0.1, "deepspeed": "ds.json"}, TORCHRUN, Z3),
    ("quantized-device-map", "quantization_device_map", {"quantization_bit": 4, "quantization_device_map": "auto"}, None, None),
    ("zero3-conflict", "pure_bf16", {"pure_bf16": True, "bf16": False, "deepspeed": "ds.json"}, TORCHRUN, Z3),
    ("zero3-conflict", "pissa_init", {"pissa_init": True, "deepspeed": "ds.json"}, TORCHRUN, Z3),
    ("layerwise-distributed", "galore_layerwise", {**FULL, "use_galore": True, "galore_layerwise": True}, TORCHRUN, None),
    ("layerwise-distributed", "apollo_layerwise", {**FULL, "use_apollo": True, "apollo_layerwise": True}, TORCHRUN, None),
    ("layerwise-distributed", "badam_mode", {**FULL, "use_badam": True, "badam_mode": "ratio"}, TORCHRUN, None),
    ("layerwise-distributed", "use_badam", {**FULL, "use_badam": True}, TORCHRUN, None),
    ("optimizer-deepspeed", "use_galore", {**FULL, "use_galore": True, "deepspeed": "ds.json"}, TORCHRUN, {"zero_optimization": {"stage": 2}}),
    ("fp8-quantization", "fp8", {"fp8": True, "quantization_bit": 4}, None, None),
    ("infer-backend-train", "infer_backend", {"infer_backend": "vllm"}, None, None),
    ("trackio-needs-project", "project", {"report_to": "trackio", "project": ""}, None, None),
    ("adapter-needs-lora", "adapter_name_or_path", {**FULL, "adapter_name_or_path": "saves/lora"}, None, None),
    ("quantization-conflict", "resize_vocab", {"quantization_bit": 4, "resize_vocab": True}, None, None),
    ("quantization-conflict", "create_new_adapter", {"quantization_bit": 4, "adapter_name_or_path": "a", "create_new_adapter": True}, None, None),
    ("quantization-conflict", "adapter_name_or_path", {"quantization_bit": 4, "adapter_name_or_path": "a,b"}, None, None),
    ("val-size-conflict", "val_size", {"val_size": 0.1, "eval_dataset": "more"}, None, None),
    ("interleave-probs", "interleave_probs", {"interleave_probs": "0.5,0.5", "dataset": "sft_data,more"}, None, None),
    ("interleave-probs", "interleave_probs", {"interleave_probs": "0.5,0.3,0.2", "dataset": ["sft_data", "more"],
                                              "mix_strategy": "interleave_under"}, None, None),
    ("interleave-probs-sum", "interleave_probs", {"interleave_probs": "0.9,0.2", "dataset": "sft_data,more",
                                                  "mix_strategy": "interleave_under"}, None, None),
    ("interleave-probs-sum", "interleave_probs", {"interleave_probs": "1.2,-0.2", "dataset": "sft_data,more",
                                                  "mix_strategy": "interleave_over"}, None, None),
    ("mix-stopping-strategy", "mix_strategy", {"dataset": "sft_data,more", "mix_strategy": "interleave_once"}, None, None),
    ("streaming-options", "max_samples", {"streaming": True, "max_steps": 100, "max_samples": 1000}, None, None),
    ("streaming-options", "val_size", {"streaming": True, "max_steps": 100, "val_size": 0.1}, None, None),
    ("mask-history-conflict", "mask_history", {"mask_history": True, "train_on_prompt": True}, None, None),
    ("reward-model-type", "reward_model_type", {**FULL, "stage": "ppo", "reward_model": "rm"}, None, None),
    ("dpo-label-smoothing", "dpo_label_smoothing", {"stage": "dpo", "dataset": "pairs", "pref_loss": "orpo",
                                                    "dpo_label_smoothing": 0.1}, None, None),
    ("llama-pro-method", "use_llama_pro", {**FULL, "use_llama_pro": True}, None, None),
    ("optimizer-conflict", "use_galore", {"use_galore": True}, None, None),
    ("optimizer-conflict", "use_apollo", {**FULL, "use_galore": True, "use_apollo": True}, None, None),
    ("pissa-stage", "pissa_init", {"stage": "kto", "pissa_init": True}, None, None),
    ("lora-only-option", "use_dora", {**FULL, "use_dora": True}, None, None),
    ("lora-only-option", "loraplus_lr_ratio", {"finetuning_type": "freeze", "loraplus_lr_ratio": 16.0}, None, None),
    ("quantization-bits", "ref_model_quantization_bit", {"ref_model_quantization_bit": 3}, None, None),
    ("model-required", "model_name_or_path", {"model_name_or_path": None}, None, None),
    ("pixels-range", "image_max_pixels", {"image_max_pixels": 512, "image_min_pixels": 1024}, None, None),
    ("invalid-json-value", "vllm_config", {"vllm_config": "{'gpu': 1}"}, None, None),
    ("special-tokens-config", "new_special_tokens_config", {"new_special_tokens_config": "/nonexistent/tokens.yaml"}, None, None),
    ("steps-settings", "save_steps", {"save_steps": 10.5}, None, None),
    ("steps-settings", "logging_steps", {"logging_steps": 0}, None, None),
    ("best-model-strategy", "load_best_model_at_end", {"load_best_model_at_end": True, "eval_strategy": "epoch",
                                                       "val_size": 0.1}, None, None),
    ("best-model-strategy", "save_steps", {"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 30,
                                           "save_steps": 100, "val_size": 0.1}, None, None),
    ("precision-conflict", "fp16", {"fp16": True}, None, None),
    ("scheduler-needs-eval", "lr_scheduler_type", {"lr_scheduler_type": "reduce_lr_on_plateau"}, None, None),
    ("warmup-negative", "warmup_steps", {"warmup_steps": -5}, None, None),
    ("prefetch-needs-workers", "dataloader_prefetch_factor", {"dataloader_prefetch_factor": 2}, None, None),
    ("missing-package", "use_galore", {**FULL, "use_galore": True}, None, None),
]


@pytest.mark.parametrize("rule, key, extra, launch, ds", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_rule_names_the_key(rule, key, extra, launch, ds):
    hits = [f for f in run(extra, launch=launch, ds=ds) if f.rule == rule and f.key == key]
    assert hits, f"{rule} did not name {key}: {run(extra, launch=launch, ds=ds)}"
    assert hits[0].severity == "error" and hits[0].fix and hits[0].fix != hits[0].message


def test_base_config_is_clean():
    assert run() == []


def test_layerwise_is_fine_on_one_process():
    single = run({**FULL, "use_galore": True, "galore_layerwise": True})
    assert not [f for f in single if f.rule == "layerwise-distributed"]
    badam = run({**FULL, "use_badam": True, "deepspeed": "ds.json"}, launch=TORCHRUN, ds=Z3)
    assert not [f for f in badam if f.rule == "layerwise-distributed"]


def test_vllm_limits_in_chat_config():
    cfg = {"model_name_or_path": "m", "template": "qwen", "infer_backend": "vllm", "quantization_bit": 4}
    assert ("vllm-limits", "quantization_bit") in {(f.rule, f.key) for f in run(cfg, verb="chat")}
    ok = {"model_name_or_path": "m", "template": "qwen", "infer_backend": "huggingface", "quantization_bit": 4}
    assert not [f for f in run(ok, verb="chat") if f.rule == "vllm-limits"]


def test_export_quantization_needs_dataset():
    cfg = {"model_name_or_path": "m", "template": "qwen", "export_dir": "e", "export_quantization_bit": 4}
    f = [f for f in run(cfg, verb="export") if f.rule == "export-quantization-dataset"]
    assert f and f[0].key == "export_quantization_dataset"


def test_lists_where_llamafactory_splits_commas():
    assert run({"dataset": ["sft_data", "more"], "lora_target": ["q_proj", "v_proj"]}) == []
    wrong = run({"adapter_name_or_path": ["a", "b"]})
    assert wrong[0].rule == "wrong-type" and "adapter_name_or_path: a,b" in wrong[0].fix


@pytest.mark.parametrize("dataset_dir", ["ONLINE", "REMOTE:llamafactory/demo_data"])
def test_hub_dataset_dirs_are_not_looked_up_locally(dataset_dir):
    assert run({"dataset_dir": dataset_dir, "dataset": "someone/some_dataset"}) == []


def test_missing_package_is_a_warning_for_remote_nodes():
    f = [f for f in run({**FULL, "use_galore": True}, launch=LaunchInfo(remote=True)) if f.rule == "missing-package"]
    assert f and f[0].severity == "warning" and "pip install galore-torch" in f[0].fix
    f = [f for f in run({"use_galore": True, **FULL})]
    assert "pip install galore-torch" in next(x for x in f if x.rule == "missing-package").fix


def test_grpo_stage_fix_points_at_recipe_verb():
    f = next(f for f in run({"stage": "grpo"}) if f.rule == "invalid-choice")
    assert "verb: grpo" in f.fix and "EasyR1" in f.fix


def test_deepspeed_json_against_the_config(tmp_path):
    ds = tmp_path / "ds_z1.json"
    ds.write_text(json.dumps({"train_batch_size": 4, "train_micro_batch_size_per_gpu": "auto", "fp16": {"enabled": True},
                              "optimizer": {"type": "AdamW", "params": {"lr": 5e-5, "betas": [0.9, 0.999]}},
                              "zero_optimization": {"stage": 1}}))
    cfg = {"deepspeed": str(ds), "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}
    found = {(f.rule, f.key) for f in run(cfg, launch=LaunchInfo(torchrun=True, world_size=2))}
    assert {("deepspeed-mismatch", "deepspeed"), ("deepspeed-mismatch", "fp16"), ("deepspeed-mismatch", "learning_rate")} <= found
    assert ("deepspeed-mismatch", "adam_beta1") not in found  # the betas agree with the defaults
    msg = next(f for f in run(cfg, launch=LaunchInfo(torchrun=True, world_size=2)) if f.key == "deepspeed")
    assert "2 process(es) x 2 x 4 = 16" in msg.message and '"train_batch_size": "auto"' in msg.fix
    # the same JSON with "auto" everywhere agrees with any config
    ds.write_text(json.dumps({"train_batch_size": "auto", "fp16": {"enabled": "auto"}, "zero_optimization": {"stage": 1}}))
    assert [f for f in run(cfg, launch=LaunchInfo(torchrun=True, world_size=2)) if f.rule != "missing-package"] == []


def test_deepspeed_file_missing_or_malformed(tmp_path):
    f = run({"deepspeed": "nowhere/ds.json"}, launch=TORCHRUN, base=tmp_path)
    assert [(x.rule, x.key) for x in f] == [("deepspeed-missing", "deepspeed")] and "nowhere/ds.json" in f[0].message
    bad = tmp_path / "ds.json"
    bad.write_text('{\n  "zero_optimization": {"stage": 2,},\n}\n')
    f = run({"deepspeed": str(bad)}, launch=TORCHRUN)
    assert [(x.rule, x.key) for x in f] == [("deepspeed-invalid", "deepspeed")] and "line 2" in f[0].message
    assert f"{bad}:2" in f[0].fix
    assert DeepSpeedSource({"zero_optimization": {"stage": 3}}).zero_stage == 3
    assert DeepSpeedSource('{"zero_optimization": {"stage": 2}}').zero_stage == 2


def test_inline_deepspeed_dict_is_checked():
    f = run({"deepspeed": {"zero_optimization": {"stage": 3}}, "use_unsloth": True}, launch=TORCHRUN)
    assert ("zero3-conflict", "use_unsloth") in {(x.rule, x.key) for x in f}


@pytest.mark.parametrize("config, verb", [
    ({"model_name_or_path": "m", "template": "qwen"}, "chat"),
    ({"model_name_or_path": "m", "template": "qwen", "learning_rate": 1e-4}, "chat"),
    ({"model_name_or_path": "m", "export_dir": "e"}, "export"),
    ({"model_name_or_path": "m", "stage": "sft"}, "train"),
    ({"model_name_or_path": "m", "output_dir": "o"}, "train"),
])
def test_verb_is_inferred_from_the_keys(config, verb):
    assert infer_verb(config) == verb


def test_training_key_in_chat_config_is_named():
    cfg = {"model_name_or_path": "m", "template": "qwen", "learning_rate": 1e-4}
    f = run(cfg, verb=infer_verb(cfg))
    assert [(x.rule, x.key) for x in f] == [("unknown-key", "learning_rate")] and "chat config" in f[0].fix


def test_bundled_zero1_profile_renders_and_validates(catalog):
    from llf_recipes.hardware import parse_gpus
    from llf_recipes.render import Overrides, Renderer
    from llf_recipes.validation import validate_stage

    recipe = catalog.recipe("sft-huanhuan-full")
    rendered = Renderer(recipe, parse_gpus("0,1"), Overrides.parse(["deepspeed=z1"], recipe), catalog).render_all()
    stage = next(r for r in rendered if r.verb == "train")
    assert stage.deepspeed_profile == "z1" and stage.deepspeed_json()["zero_optimization"]["stage"] == 1
    assert [f for f in validate_stage(stage, catalog) if f.severity == "error"] == []
    # the seed's ZeRO-1 JSON, with fixed batch sizes, fp16 and an optimizer, is caught against the same stage
    fixed = {"train_batch_size": 4, "fp16": {"enabled": True}, "zero_optimization": {"stage": 1},
             "optimizer": {"type": "AdamW", "params": {"lr": 5e-5}}}
    found = validate_config(stage.config, "train", launch=LaunchInfo(torchrun=True, world_size=2), deepspeed_json=fixed)
    assert {"deepspeed", "fp16", "learning_rate"} <= {f.key for f in found if f.rule == "deepspeed-mismatch"}


@pytest.mark.parametrize("name", ["PyYAML", "pyyaml", "jinja2", "Jinja2", "galore-torch", "galore_torch", "rouge-chinese"])
def test_installed_agrees_with_importlib_metadata(name):
    import importlib.metadata

    from llf_recipes.schema.packages import installed

    try:
        importlib.metadata.version(name)
        expected = True
    except importlib.metadata.PackageNotFoundError:
        expected = False
    assert installed(name) is expected


def test_yaml_reads_values_as_llamafactory_does():
    OmegaConf = pytest.importorskip("omegaconf").OmegaConf

    text = "do_train: yes\nbf16: on\nstreaming: no\nlearning_rate: 1e-4\nrun_name: 2024-05-01\nsave_steps: 0x10\n"
    ours = yamlio.load(text)
    assert ours == OmegaConf.to_container(OmegaConf.create(text))
    assert run({"do_train": ours["do_train"], "run_name": ours["run_name"], "learning_rate": ours["learning_rate"]}) == []


def test_output_dir_with_a_finished_model(tmp_path):
    out = tmp_path / "saves" / "run"
    out.mkdir(parents=True)
    (out / "adapter_model.safetensors").write_bytes(b"x")
    f = [x for x in run({"output_dir": "saves/run"}, base=tmp_path) if x.rule == "output-dir-not-empty"]
    assert f and f[0].key == "output_dir" and "overwrite_output_dir: true" in f[0].fix
    assert not [x for x in run({"output_dir": str(out), "overwrite_output_dir": True}) if x.rule == "output-dir-not-empty"]
    (out / "checkpoint-10").mkdir()  # LLaMA-Factory resumes from it instead
    assert not [x for x in run({"output_dir": str(out)}) if x.rule == "output-dir-not-empty"]


@pytest.mark.parametrize("bad", ["x", 3, -1.5, ["a", 1], {"k": None}, None, True])
def test_any_value_of_any_key_gives_findings_not_a_crash(bad):
    from llf_recipes.schema import keys_for

    for verb in ("train", "chat"):
        for key in keys_for(verb):
            for f in run({key: bad, "deepspeed": {"zero_optimization": {"stage": 3}}} if verb == "train" else {key: bad},
                         verb=verb, launch=TORCHRUN):
                assert f.key and f.fix


def test_validate_cli_never_tracebacks_on_odd_files(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd.yaml").write_text("model_name_or_path: m\nstage: sft\ndo_train: true\ndataset: x\ndataset_dir: 5\n")
    code, _, err = cli("validate", "odd.yaml")
    assert code == 1 and "dataset_dir: must be str" in err
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    code, _, err = cli("validate", "binary.yaml")
    assert code == 2 and "binary.yaml" in err and "UTF-8" in err

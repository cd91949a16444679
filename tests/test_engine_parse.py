"""The CI dry run: every stage of every recipe on every bundled hostfile, parsed by LLaMA-Factory's own
HfArgumentParser over the verb's dataclasses with extra keys disallowed."""

import dataclasses

import pytest

pytest.importorskip("llamafactory", reason="needs the train extra")

from llf_recipes.hardware import parse_hostfile
from llf_recipes.render import Renderer
from llf_recipes.schema import snapshot


@pytest.fixture(scope="module")
def lf():
    import deepspeed  # noqa: F401 - the train extra installs it; the profiles are checked through it
    import transformers.training_args as targs
    from llamafactory.hparams import parser as lf_parser
    from transformers import HfArgumentParser

    return HfArgumentParser, lf_parser, targs


def _renders(catalog):
    for recipe in catalog.recipes():
        for hf_name, path in catalog.hostfile_paths.items():
            for r in Renderer(recipe, parse_hostfile(path), catalog=catalog).render_all():
                yield f"{recipe.name}/{r.stage.name}@{hf_name}", r


def test_every_rendered_stage_parses_with_llamafactory(catalog, lf, monkeypatch):
    HfArgumentParser, lf_parser, targs = lf
    # The rendered configs target GPU machines; this one has none. Answer the hardware probe as a bf16 GPU would,
    # so TrainingArguments checks the config rather than this machine.
    monkeypatch.setattr(targs, "is_torch_bf16_gpu_available", lambda: True)
    train_fields = {f.name for cls in lf_parser._TRAIN_ARGS for f in dataclasses.fields(cls)}
    infer_parser = HfArgumentParser(lf_parser._INFER_ARGS)
    train_parser = HfArgumentParser(lf_parser._TRAIN_ARGS)
    count = deepspeed_count = 0
    for label, r in _renders(catalog):
        cfg = dict(r.config)
        if r.verb == "grpo" or r.engine == "llf":  # GRPO settings for EasyR1/TRL (tests/test_grpo_easyr1.py); llf verbs
            continue
        if r.verb != "train":
            infer_parser.parse_dict(cfg, allow_extra_keys=False)
            count += 1
            continue
        # The deepspeed key stays: TrainingArguments hands the profile to transformers' own DeepSpeed integration
        # (the train extra installs deepspeed), which reads and checks it.
        ds = cfg.get("deepspeed")
        if ds is not None:
            assert "deepspeed" in train_fields
            assert r.deepspeed_json()["zero_optimization"]["stage"] in (0, 1, 2, 3), label
        _, _, training_args, finetuning_args, _ = train_parser.parse_dict(cfg, allow_extra_keys=False)
        if ds is not None:
            assert training_args.deepspeed == ds, label
            plugin = training_args.hf_deepspeed_config
            assert plugin.config["zero_optimization"]["stage"] == r.deepspeed_json()["zero_optimization"]["stage"], label
            assert plugin.is_zero3() == (plugin.config["zero_optimization"]["stage"] == 3), label
            deepspeed_count += 1
        assert finetuning_args.stage == cfg["stage"], label
        assert training_args.per_device_train_batch_size == cfg["per_device_train_batch_size"], label
        assert training_args.learning_rate == pytest.approx(cfg["learning_rate"]), label
        count += 1
    assert count >= 39  # 13 stages x 3 hostfiles at least
    assert deepspeed_count >= 13  # every multi-GPU layout renders a DeepSpeed profile


def test_extra_keys_are_refused_by_llamafactory_too(lf):
    HfArgumentParser, lf_parser, _ = lf
    with pytest.raises(ValueError, match="not used by the HfArgumentParser"):
        HfArgumentParser(lf_parser._TRAIN_ARGS).parse_dict({"model_name_or_path": "m", "stage": "sft", "output_dir": "o", "lerning_rate": 1}, allow_extra_keys=False)


def test_snapshot_matches_installed_llamafactory():
    import json

    built = snapshot.build()
    stored = json.loads(snapshot.snapshot_path(built["llamafactory"]).read_text(encoding="utf-8"))
    assert built == stored, "the installed llamafactory differs from the snapshot: run python -m llf_recipes.schema.snapshot"
    assert len(built["verbs"]["train"]) == 346 and len(built["verbs"]["infer"]) == 211

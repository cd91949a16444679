"""Loading one run's model must not change the template the next load in the same process gets.

LLaMA-Factory's `get_template_and_fix_tokenizer` writes `default_system` into its module-level template object; `eval`
over several runs, `generate` and `ask` load models in-process one after another, so each load keeps its own copy.
What a load must leave alone is the registry as it stands before it (an earlier caller in the same process, such as
a test's own LLaMA-Factory oracle, may have written to it as LLaMA-Factory does).
"""

from __future__ import annotations

import pytest

pytest.importorskip("llamafactory", reason="needs the train extra (llamafactory + torch)")

SYSTEM_A = "Answer as run A would."


def _registry_system() -> str:
    from llamafactory.data.template import TEMPLATES

    return TEMPLATES["qwen"].default_system


def _eval_run(tmp_path, tiny_model, name: str, system: str | None):
    from llf_recipes.eval.runs import Run

    config = {"stage": "sft", "template": "qwen", "model_name_or_path": str(tiny_model)}
    if system:
        config["default_system"] = system
    data = {"verb": "train", "model": {"base": str(tiny_model), "template": "qwen"}, "config": config}
    return Run(name, tmp_path / name, data)


def test_eval_of_two_runs_keeps_each_runs_system_prompt(tmp_path, tiny_model):
    before = _registry_system()
    assert before != SYSTEM_A
    from llf_recipes.eval import session
    from llf_recipes.eval.runs import Options

    options = Options(max_samples=0, generation_samples=0, progress=False)
    first = session.prepare(_eval_run(tmp_path, tiny_model, "a", SYSTEM_A), options)
    second = session.prepare(_eval_run(tmp_path, tiny_model, "b", None), options)
    assert first.template.default_system == SYSTEM_A
    assert second.template.default_system == before
    assert _registry_system() == before


def test_chat_model_loads_keep_each_runs_system_prompt(tmp_path, tiny_model):
    before = _registry_system()
    assert before != SYSTEM_A
    from llf_recipes.generate.batch import _load

    base = {"model_name_or_path": str(tiny_model), "template": "qwen", "infer_backend": "huggingface",
            "trust_remote_code": True}
    first = _load({**base, "default_system": SYSTEM_A}, tmp_path / "a.log")
    assert first.engine.template.default_system == SYSTEM_A
    second = _load(base, tmp_path / "b.log")
    assert second.engine.template.default_system == before
    assert _registry_system() == before


def test_ask_leaves_the_registered_template_alone(tmp_path, tiny_model):
    before = _registry_system()
    assert before != SYSTEM_A
    from llf_recipes.use import ask

    run = tmp_path / "run"
    run.mkdir()
    data = {"model": {"base": str(tiny_model), "template": "qwen"}, "config": {"stage": "sft"}}
    answer = ask(run, data, "hello", sampling={"max_new_tokens": 2, "do_sample": False, "default_system": SYSTEM_A})
    assert isinstance(answer, str)
    assert _registry_system() == before

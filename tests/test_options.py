"""One option vocabulary: the same names for the same things in every verb, old spellings still accepted (hidden),
help text on every option, and sampling options that LLaMA-Factory's own parser takes."""

from __future__ import annotations

import argparse

import pytest
import yaml

from llf_recipes import manifest
from llf_recipes.cli import VERBS, build_parser


def verb_parsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_verb_is_there_and_every_visible_option_has_help():
    parsers = verb_parsers()
    assert set(parsers) == set(VERBS)
    missing = [f"{verb} {'/'.join(a.option_strings) or a.dest}" for verb, p in parsers.items() for a in p._actions
               if a.help is None]
    assert not missing, missing


@pytest.mark.parametrize("verb", ["ask", "chat", "serve"])
def test_sampling_options_are_the_same_on_ask_chat_and_serve(verb):
    p = verb_parsers()[verb]
    options = {o for a in p._actions for o in a.option_strings}
    assert {"--max-new-tokens", "--temperature", "--top-p", "--top-k", "--repetition-penalty"} <= options


def test_sampling_options_reach_llamafactorys_generating_arguments(tmp_path, tiny_model):
    from llamafactory.hparams import get_infer_args

    from llf_recipes.cli.common import sampling_from
    from llf_recipes.use import inference_yaml

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    data = {"model": {"base": str(tiny_model), "adapters": [], "template": "qwen"}}
    manifest.write(run_dir, data)
    args = build_parser("chat").parse_args(["chat", str(run_dir), "--temperature", "0.7", "--top-p", "0.9", "--top-k",
                                            "5", "--repetition-penalty", "1.2", "--max-new-tokens", "33"])
    config = yaml.safe_load(inference_yaml(run_dir, data, "chat", sampling_from(args)).read_text())
    generating = get_infer_args(config)[3]
    assert (generating.do_sample, generating.temperature, generating.top_p, generating.top_k,
            generating.repetition_penalty, generating.max_new_tokens) == (True, 0.7, 0.9, 5, 1.2, 33)
    greedy = build_parser("ask").parse_args(["ask", str(run_dir), "hi"])
    config = yaml.safe_load(inference_yaml(run_dir, data, "chat", sampling_from(greedy)).read_text())
    assert get_infer_args(config)[3].do_sample is False

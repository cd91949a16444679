"""One option vocabulary: the same names for the same things in every verb, old spellings still accepted (hidden),
help text on every option, and sampling options that LLaMA-Factory's own parser takes."""

from __future__ import annotations

import argparse
import re

import pytest
import yaml

from llf_recipes import manifest
from llf_recipes.cli import VERBS, build_parser
from llf_recipes.cli.verb import DEVICES


def verb_parsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_verb_is_there_and_every_visible_option_has_help():
    parsers = verb_parsers()
    assert set(parsers) == set(VERBS)
    missing = [f"{verb} {'/'.join(a.option_strings) or a.dest}" for verb, p in parsers.items() for a in p._actions
               if a.help is None]
    assert not missing, missing


@pytest.mark.parametrize("verb", ["ask", "chat", "serve", "generate"])
def test_sampling_options_are_the_same_on_ask_chat_serve_and_generate(verb):
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
    greedy = build_parser("ask").parse_args(["ask", str(run_dir), "hi", "--temperature", "0"])
    config = yaml.safe_load(inference_yaml(run_dir, data, "chat", sampling_from(greedy)).read_text())
    assert get_infer_args(config)[3].temperature == 0  # LLaMA-Factory's engines decode greedily at temperature 0


@pytest.mark.parametrize(("argv", "dest", "value"), [
    (["prepare", "--recipe", "zhihu", "--sample-data"], "sample", True),
    (["prepare", "--recipe", "zhihu", "--sample"], "sample", True),  # the earlier spelling
    (["prepare", "--recipe", "zhihu"], "sample", False),
    (["convert", "zhihu_sft", "--sample"], "sample", True),
    (["eval", "saves", "--limit", "7"], "max_samples", 7),
    (["eval", "saves", "--max-samples", "7"], "max_samples", 7),
    (["eval", "saves"], "max_samples", 100),
    (["render", "zhihu", "--output-dir", "out"], "output", "out"),
    (["render", "zhihu", "-o", "out"], "output", "out"),
    (["export", "zhihu", "-o", "m"], "export_dir", "m"),
    (["export", "zhihu", "--export-dir", "m"], "export_dir", "m"),
    (["run", "zhihu", "--device", "auto"], "device", "auto"),
    (["eval", "saves", "--device", "cuda:1"], "device", "cuda:1"),
    (["merge", "a", "b", "-o", "c", "--method", "soup", "--device", "cuda:0"], "device", "cuda:0"),
])
def test_one_name_per_thing_and_the_old_spellings_still_work(argv, dest, value):
    got = getattr(build_parser(argv[0]).parse_args(argv), dest)
    assert str(got) == str(value)


def test_old_spellings_are_hidden_from_help(capsys):
    for verb, old, new in (("prepare", "--sample", "--sample-data"), ("eval", "--max-samples", "--limit"),
                           ("render", "-o", "--output-dir"), ("export", "--export-dir", "-o DIR, --output DIR")):
        with pytest.raises(SystemExit):
            build_parser(verb).parse_args([verb, "--help"])
        text = capsys.readouterr().out
        assert new in text and not re.search(rf"(?<![-\w]){re.escape(old)}(?![-\w])", text), (verb, text)


@pytest.mark.parametrize("verb", ["run", "render", "validate", "doctor", "eval", "merge"])
def test_device_takes_the_same_names_everywhere(verb, capsys):
    argv = {"run": ["run", "zhihu"], "render": ["render", "zhihu"], "validate": ["validate", "zhihu"],
            "doctor": ["doctor"], "eval": ["eval", "saves"], "merge": ["merge", "a", "b", "-o", "c", "--method", "soup"]}
    for device in ("auto", "cuda", "npu", "cpu"):
        assert build_parser(verb).parse_args([*argv[verb], "--device", device]).device == device
    with pytest.raises(SystemExit):
        build_parser(verb).parse_args([*argv[verb], "--device", "gpu"])
    assert "'gpu' is not a device (use auto, cuda, npu, cpu" in capsys.readouterr().err


def test_eval_methods_take_a_comma_list_like_every_other_list(tmp_path, cli):
    code, _, err = cli("eval", tmp_path, "--methods", "sft,dpo")
    assert code == 2 and "no completed run of method sft, dpo under" in err


def test_the_vocabulary_holds_in_every_verb():
    """Guards the names for verbs added later: no retired spelling visible, --sample always a row count,
    --device always the shared names."""
    for verb, p in verb_parsers().items():
        for a in p._actions:
            if a.help == argparse.SUPPRESS:
                continue
            names = set(a.option_strings)
            assert not names & {"--max-samples", "--export-dir"}, (verb, names)
            if "--sample" in names:
                assert a.type is int, (verb, "--sample takes N rows; the bundled rows are --sample-data")
            if "--device" in names and a.type is None:  # plain choices: exactly the shared names
                assert tuple(a.choices) == DEVICES, verb
            elif "--device" in names:
                assert a.type("auto") == "auto", verb
                with pytest.raises(argparse.ArgumentTypeError):
                    a.type("gpu")

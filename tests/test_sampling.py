"""Sampling options and the inference backend, the same on ask, chat, serve and generate: checked before any model
loads, and honoured by the generation that actually runs (compared with an independent transformers `generate` on
the tiny model, with the same prompt, template and settings)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import vllm_standin
from conftest import ROOT, run_cli_subprocess
from loopback import free_port, wait_for_server

from llf_recipes import manifest
from llf_recipes.cli import build_parser

VERBS = ["ask", "chat", "serve", "generate"]
SYSTEM = "You are a helpful assistant."
PROMPT = "hello there"


def verb_argv(verb: str, run: str | Path, tmp_path: Path) -> list[str]:
    """The least a verb needs besides the sampling options."""
    return {"ask": ["ask", str(run), "hi"], "chat": ["chat", str(run)], "serve": ["serve", str(run)],
            "generate": ["generate", str(run), "--dataset", "huanhuan", "-o", str(tmp_path / "out.jsonl")]}[verb]


def sampling_actions(verb: str) -> list[tuple]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.choices[verb]
    group = next(g for g in p._action_groups if g.title == "sampling")
    return [(tuple(a.option_strings), a.dest, a.default, a.type, a.choices, a.help) for a in group._group_actions]


def test_one_option_group_with_the_same_names_defaults_and_help_on_every_verb():
    groups = {verb: sampling_actions(verb) for verb in VERBS}
    assert all(g == groups["ask"] for g in groups.values())
    options = {o for a in groups["ask"] for o in a[0]}
    assert options == {"--temperature", "--top-p", "--top-k", "--repetition-penalty", "--max-new-tokens", "--backend"}
    # LLaMA-Factory's own generating defaults, but for the longest answer
    from llamafactory.hparams import GeneratingArguments

    lf = GeneratingArguments()
    defaults = {a[1]: a[2] for a in groups["ask"]}
    assert (defaults["temperature"], defaults["top_p"], defaults["top_k"], defaults["repetition_penalty"]) == (
        lf.temperature, lf.top_p, lf.top_k, lf.repetition_penalty)
    assert defaults["backend"] == "hf" and defaults["max_new_tokens"] == 512


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize(("option", "value"), [
    ("--top-p", "0"), ("--top-p", "1.5"), ("--temperature", "-0.1"), ("--temperature", "nan"), ("--top-k", "-1"),
    ("--repetition-penalty", "0"), ("--max-new-tokens", "0"),
])
def test_a_bad_value_stops_with_one_line_naming_the_option(verb, option, value, cli, tmp_path):
    code, out, err = cli(*verb_argv(verb, tmp_path / "no-such-run", tmp_path), option, value)
    assert code == 2 and out == ""
    first = err.splitlines()[0]
    assert first.startswith(f"error: {option} {value} must ") and "Traceback" not in err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory) -> Path:
    """A completed run whose model is the tiny base model (no adapter), as `export` leaves one."""
    path = tmp_path_factory.mktemp("sampling") / "run"
    path.mkdir()
    manifest.write(path, {"status": "completed", "recipe": {"name": "tiny"}, "stage": "sft",
                          "model": {"base": str(tiny_model), "adapters": [], "template": "qwen"}})
    return path


@pytest.mark.parametrize("verb", VERBS)
def test_vllm_without_the_package_stops_before_the_model_loads(verb, run_dir, cli, tmp_path):
    pytest.importorskip("llamafactory")
    if __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    code, _, err = cli(*verb_argv(verb, run_dir, tmp_path), "--backend", "vllm")
    assert code == 2, err
    assert err.splitlines()[0] == "error: --backend vllm needs the vllm package, which is not installed"
    assert "pip install 'llf-recipes[vllm]'" in err and "Traceback" not in err
    assert not any(run_dir.glob(f"llf-{verb}.*")) and not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("verb", ["ask", "generate"])
def test_vllm_without_a_cuda_device_or_in_another_version_stops_before_the_model_loads(verb, run_dir, cli, tmp_path,
                                                                                        monkeypatch):
    from llf_recipes.preflight import visible_cuda_devices

    if visible_cuda_devices():
        pytest.skip("this machine has a CUDA device")
    monkeypatch.syspath_prepend(str(vllm_standin.install(tmp_path / "good")))
    code, _, err = cli(*verb_argv(verb, run_dir, tmp_path), "--backend", "vllm")
    assert code == 2 and err.splitlines()[0] == "error: --backend vllm needs a CUDA device, and this machine has none"
    assert not any(run_dir.glob(f"llf-{verb}.*")) and not (tmp_path / "out.jsonl").exists()
    monkeypatch.syspath_prepend(str(vllm_standin.install(tmp_path / "new", "0.12.0")))
    code, _, err = cli(*verb_argv(verb, run_dir, tmp_path), "--backend", "vllm")
    assert code == 2 and err.splitlines()[0] == ("error: --backend vllm: vllm 0.12.0 is installed, LLaMA-Factory 0.9.5 "
                                                 "takes vllm>=0.4.3,<=0.11.0")


def test_vllm_takes_one_adapter_so_a_chain_is_merged_first(tmp_path):
    """The run's chain is refused by the rule `validate` applies to a chat config with infer_backend: vllm."""
    from llf_recipes.errors import LlfError
    from llf_recipes.schema.rules import validate_config
    from llf_recipes.use import infer_config

    adapters = [tmp_path / "sft", tmp_path / "dpo"]
    for adapter in adapters:
        adapter.mkdir()
    data = {"model": {"base": "m", "adapters": [str(a) for a in adapters], "template": "qwen"}}
    with pytest.raises(LlfError, match="the run in .*: vLLM loads one LoRA adapter, not a stack of 2") as caught:
        infer_config(tmp_path, data, infer_backend="vllm")
    assert "llf-recipes export" in caught.value.fix
    chained = infer_config(tmp_path, data, infer_backend="huggingface")
    (found,) = [f for f in validate_config({**chained, "infer_backend": "vllm"}, "chat", stage="s", datasets={})
                if f.rule == "vllm-limits"]
    assert found.key == "adapter_name_or_path" and found.message in caught.value.message
    data["model"]["adapters"] = data["model"]["adapters"][:1]
    assert infer_config(tmp_path, data, infer_backend="vllm")["adapter_name_or_path"] == str(adapters[0])


def test_the_vllm_range_is_the_one_llamafactorys_parser_checks(tmp_path, monkeypatch):
    """Read from LLaMA-Factory's own source, without importing it: the range its parser refuses a vLLM outside of."""
    import importlib.metadata

    from llamafactory.hparams import get_infer_args

    from llf_recipes.sampling import llamafactory_vllm_range

    version, wanted = llamafactory_vllm_range()
    assert version == importlib.metadata.version("llamafactory")
    monkeypatch.delenv("DISABLE_VERSION_CHECK", raising=False)
    monkeypatch.syspath_prepend(str(vllm_standin.install(tmp_path / "new", "0.12.0")))
    with pytest.raises(ImportError) as refused:
        get_infer_args({"model_name_or_path": "m", "template": "qwen", "infer_backend": "vllm"})
    assert str(refused.value).startswith(f"vllm{wanted} is required")


def test_a_vllm_refusal_comes_without_importing_torch(run_dir, tmp_path):
    """The package, version and device checks run before anything heavy: with torch and transformers unimportable,
    --backend vllm on a machine (or CUDA_VISIBLE_DEVICES) without a CUDA device still ends in its one line."""
    poison = tmp_path / "poison"
    for mod in ("torch", "transformers"):
        (poison / mod).mkdir(parents=True)
        (poison / mod / "__init__.py").write_text(f"raise ImportError('{mod} imported')\n")
    standin = vllm_standin.install(tmp_path / "standin")
    env = {"PYTHONPATH": os.pathsep.join([str(poison), str(standin), os.environ.get("PYTHONPATH", "")]),
           "CUDA_VISIBLE_DEVICES": ""}
    for verb in VERBS:
        proc = run_cli_subprocess(*verb_argv(verb, run_dir, tmp_path), "--backend", "vllm", env=env, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.splitlines()[0] == ("error: --backend vllm needs a CUDA device, and CUDA_VISIBLE_DEVICES='' "
                                               "leaves none"), proc.stderr


def test_the_options_reach_llamafactorys_generating_arguments_for_either_backend(run_dir):
    from llamafactory.hparams import get_infer_args

    from llf_recipes.cli.common import sampling_from
    from llf_recipes.use import infer_config

    args = build_parser("chat").parse_args(["chat", str(run_dir), "--temperature", "0", "--top-p", "0.9", "--top-k",
                                            "5", "--repetition-penalty", "1.2", "--max-new-tokens", "33"])
    config = infer_config(run_dir, manifest.read(run_dir), infer_backend="huggingface", **sampling_from(args))
    generating = get_infer_args(config)[3]
    assert (generating.temperature, generating.top_p, generating.top_k, generating.repetition_penalty,
            generating.max_new_tokens) == (0, 0.9, 5, 1.2, 33)


@pytest.fixture(scope="module")
def reference(tiny_model):
    """Greedy answers from plain transformers: the tokenizer's own chat template, model.generate, decode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)

    def greedy(max_new_tokens: int, repetition_penalty: float = 1.0, prompt: str = PROMPT) -> str:
        ids = tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
                                            add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**ids, do_sample=False, max_new_tokens=max_new_tokens,
                             repetition_penalty=repetition_penalty)
        return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True,
                                clean_up_tokenization_spaces=True)

    return greedy


def ask(run_dir: Path, *options: str) -> str:
    proc = run_cli_subprocess("ask", run_dir, PROMPT, "--system", SYSTEM, *options, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.endswith("\n")
    return proc.stdout[:-1]


def test_greedy_ask_is_deterministic_and_equals_transformers_and_so_does_the_repetition_penalty(run_dir, reference):
    plain = reference(12)
    penalised = reference(12, 1.5)
    assert plain != penalised  # the tiny model repeats itself, so the penalty shows
    assert ask(run_dir, "--temperature", "0", "--max-new-tokens", "12") == plain
    assert ask(run_dir, "--temperature", "0", "--max-new-tokens", "12") == plain
    assert ask(run_dir, "--temperature", "0", "--max-new-tokens", "12", "--repetition-penalty", "1.5") == penalised


def test_serve_takes_a_requests_sampling_fields_and_the_command_line_otherwise(run_dir, reference):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llf_recipes", "serve", str(run_dir), "--port", str(port),
                             "--model-name", "tiny", "--temperature", "0", "--max-new-tokens", "6",
                             "--repetition-penalty", "1.5"], cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"

    def chat(**fields) -> str:
        body = {"model": "tiny", "messages": [{"role": "system", "content": SYSTEM},
                                              {"role": "user", "content": PROMPT}], **fields}
        req = urllib.request.Request(f"{base}/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=120).read())["choices"][0]["message"]["content"]

    try:
        wait_for_server(proc, base)
        assert reference(6, 1.5) != reference(10, 1.0) != reference(6, 1.0)  # each setting shows in the answer
        # Nothing set by the request: the command line's greedy decoding, penalty and length.
        assert chat() == chat() == reference(6, 1.5)
        # The request's own length and penalty (LLaMA-Factory's API reads presence_penalty as the repetition penalty).
        assert chat(max_tokens=10, presence_penalty=1.0) == reference(10, 1.0)
        # A request's temperature samples although the command line decodes greedily.
        sampled = {chat(temperature=1.5, top_p=1.0, max_tokens=8) for _ in range(4)}
        assert len(sampled) > 1
        # What LLaMA-Factory's app would answer wrongly is refused with a 400 before anything is generated.
        for fields, why in [({"stream": True, "n": 2}, "n > 1 cannot be streamed"),
                            ({"temperature": 0, "n": 2}, "temperature 0 decodes greedily"),
                            ({"max_tokens": 0}, "max_tokens must be at least 1")]:
            with pytest.raises(urllib.error.HTTPError) as refused:
                chat(**fields)
            assert refused.value.code == 400 and why in json.loads(refused.value.read())["detail"], fields
        # The check replays a request it lets through: temperature 0 is greedy, streamed too.
        assert chat(temperature=0, max_tokens=6) == reference(6, 1.5)
        body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "stream": True, "max_tokens": 4}
        req = urllib.request.Request(f"{base}/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        assert urllib.request.urlopen(req, timeout=120).read().decode().rstrip().endswith("data: [DONE]")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    assert "Traceback" not in output, output[-3000:]


def test_greedy_generate_equals_transformers_with_the_same_penalty(run_dir, reference, tmp_path, cli):
    """`generate` over a registered dataset (its system column given, so the prompt is fully known) answers as
    transformers does, penalty included."""
    prompts = [PROMPT, "What is a tokenizer?"]
    data = tmp_path / "data"
    data.mkdir()
    (data / "asks.json").write_text(json.dumps([{"instruction": p, "output": "-", "system": SYSTEM} for p in prompts]))
    (data / "dataset_info.json").write_text(json.dumps({"asks": {"file_name": "asks.json", "columns": {
        "prompt": "instruction", "response": "output", "system": "system"}}}))
    out = tmp_path / "greedy.jsonl"
    code, _, err = cli("generate", run_dir, "--dataset", "asks", "--data-dir", data, "-o", out, "--temperature", "0",
                       "--max-new-tokens", "12", "--repetition-penalty", "1.5", "--no-progress")
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["answers"] for r in rows] == [[reference(12, 1.5, p)] for p in prompts]
    assert [reference(12, 1.5, p) for p in prompts] != [reference(12, 1.0, p) for p in prompts]  # the penalty shows
    assert rows[0]["settings"]["repetition_penalty"] == 1.5 and rows[0]["settings"]["temperature"] == 0


def test_top_k_0_is_off_as_transformers_reads_it(run_dir, tmp_path, cli):
    """--top-k 0 samples among every token: the very answers of a top-k as large as the vocabulary (same seed), where
    --top-k 1 decodes greedily."""
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(manifest.read(run_dir)["model"]["base"]).vocab_size
    data = tmp_path / "data"
    data.mkdir()
    (data / "asks.json").write_text(json.dumps([{"instruction": p, "output": "-", "system": SYSTEM}
                                                for p in (PROMPT, "What is a tokenizer?")]))
    (data / "dataset_info.json").write_text(json.dumps({"asks": {"file_name": "asks.json", "columns": {
        "prompt": "instruction", "response": "output", "system": "system"}}}))

    def answers(top_k: int) -> list[list[str]]:
        out = tmp_path / f"top{top_k}.jsonl"
        code, _, err = cli("generate", run_dir, "--dataset", "asks", "--data-dir", data, "-o", out, "--temperature",
                           "1.5", "--top-p", "1", "--top-k", top_k, "--max-new-tokens", "8", "--num-return", "2",
                           "--no-progress")
        assert code == 0, err
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert all(r["settings"]["top_k"] == top_k for r in rows)
        return [r["answers"] for r in rows]

    off = answers(0)
    assert off == answers(vocab)
    assert off != answers(1)  # a real cut shows in the answers


@pytest.fixture
def vllm_here(tmp_path, monkeypatch):
    """vLLM's stand-in importable and a CUDA device reported (by the driver, and to torch), in this process only."""
    import torch
    import vllm_standin

    from llf_recipes import preflight

    monkeypatch.syspath_prepend(str(vllm_standin.install(tmp_path / "standin")))
    monkeypatch.setattr(preflight, "cuda_inventory",
                        lambda: preflight.Inventory((preflight.Gpu(0, "stand-in", 9.0),), "test"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    yield
    for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")]:
        del sys.modules[name]


def test_generate_through_the_vllm_path_encodes_seeds_and_resumes_as_the_hf_path(run_dir, tmp_path, cli, vllm_here):
    from transformers import AutoTokenizer

    prompts = [PROMPT, "What is a tokenizer?", "Name a colour."]
    data = tmp_path / "data"
    data.mkdir()
    (data / "asks.json").write_text(json.dumps([{"instruction": p, "output": "-", "system": SYSTEM} for p in prompts]))
    (data / "dataset_info.json").write_text(json.dumps({"asks": {"file_name": "asks.json", "columns": {
        "prompt": "instruction", "response": "output", "system": "system"}}}))
    greedy = ["--dataset", "asks", "--data-dir", data, "--temperature", "0", "--max-new-tokens", "12",
              "--repetition-penalty", "1.5", "--no-progress"]
    code, _, err = cli("generate", run_dir, "-o", tmp_path / "hf.jsonl", *greedy)
    assert code == 0, err
    code, _, err = cli("generate", run_dir, "-o", tmp_path / "vllm.jsonl", *greedy, "--backend", "vllm")
    assert code == 0, err
    hf, vllm = ([json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
                for name in ("hf.jsonl", "vllm.jsonl"))
    assert [r["answers"] for r in vllm] == [r["answers"] for r in hf]
    assert vllm[0]["settings"]["backend"] == "vllm" and hf[0]["settings"]["backend"] == "huggingface"

    from vllm import LLM

    tokenizer = AutoTokenizer.from_pretrained(manifest.read(run_dir)["model"]["base"])
    expected = [tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}],
                                              add_generation_prompt=True, return_dict=True)["input_ids"] for p in prompts]
    assert [ids for ids, _, _ in LLM.calls] == expected  # the template's encoding, system prompt included
    params = [p for _, p, _ in LLM.calls]
    assert [p.seed for p in params] == [42, 43, 44] and {(p.max_tokens, p.repetition_penalty, p.n) for p in params} == {
        (12, 1.5, 1)}
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in params[0].stop_token_ids
    assert LLM.engines[-1].args["enable_lora"] is False

    # Sampled, two answers a prompt, interrupted after the first row: the rerun writes what one run would.
    sampled = ["--dataset", "asks", "--data-dir", data, "--temperature", "0.9", "--top-p", "1", "--num-return", "2",
               "--max-new-tokens", "6", "--backend", "vllm", "--no-progress"]
    whole = tmp_path / "sampled.jsonl"
    assert cli("generate", run_dir, "-o", whole, *sampled)[0] == 0
    resumed = tmp_path / "resumed.jsonl"
    resumed.write_bytes(whole.read_bytes().split(b"\n", 1)[0] + b"\n")
    code, out, err = cli("generate", run_dir, "-o", resumed, *sampled)
    assert code == 0 and "generated answers to 2 of 3 prompts, 1 already there" in out, err
    assert resumed.read_bytes() == whole.read_bytes()
    assert all(len(json.loads(line)["answers"]) == 2 for line in whole.read_text().splitlines())

    # top-k off (0) reaches vLLM as its own spelling of off
    calls = len(LLM.calls)
    code, _, err = cli("generate", run_dir, "-o", tmp_path / "all.jsonl", *sampled, "--top-k", "0")
    assert code == 0, err
    assert [p.top_k for _, p, _ in LLM.calls[calls:]] == [-1, -1, -1]


def test_chat_ends_without_a_traceback_at_end_of_input_and_on_ctrl_c_and_keeps_engine_lines_in_its_log(run_dir):
    argv = [sys.executable, "-m", "llf_recipes", "chat", str(run_dir), "--temperature", "0", "--max-new-tokens", "4"]
    done = subprocess.run(argv, input="hello\n", capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout and "INFO" not in done.stderr + done.stdout
    assert done.stdout.count("User: ") == 2 and "Assistant: " in done.stdout
    assert "INFO" in (run_dir / "llf-chat.log").read_text()  # the engine's lines went to the log
    # Ctrl-C at the prompt: exit 130, no traceback.
    out = run_dir / "chat.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, text=True)
        try:
            deadline = time.time() + 240
            while "User: " not in out.read_text():
                assert proc.poll() is None and time.time() < deadline, out.read_text()[-3000:]
                time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
    assert "Traceback" not in out.read_text()

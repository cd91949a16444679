"""The tiny smoke-test model: reproducible, loadable by transformers, accepted by LLaMA-Factory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llf_recipes import smoke


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return smoke.build_tiny_model(tmp_path_factory.mktemp("smoke") / "tiny")


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def test_import_does_not_pull_in_torch():
    code = "import sys, llf_recipes.smoke; sys.exit(int(any(m in sys.modules for m in ('torch', 'transformers'))))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_build_is_deterministic(model_dir, tmp_path):
    from safetensors.torch import load_file

    again = smoke.build_tiny_model(tmp_path / "again", seed=0)
    assert (again / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()
    a, b = load_file(model_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and a
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
        assert a[name].numpy().tobytes() == b[name].numpy().tobytes(), name
    # No temporary or displaced directories are left beside the result.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]


def test_rebuild_replaces_in_place_and_seed_matters(tmp_path):
    from safetensors.torch import load_file

    dest = smoke.build_tiny_model(tmp_path / "m", seed=0)
    w0 = load_file(dest / "model.safetensors")
    assert smoke.build_tiny_model(dest, seed=1) == dest
    w1 = load_file(dest / "model.safetensors")
    assert any(not w0[k].equal(w1[k]) for k in w0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_special_tokens_and_chinese_round_trip(tokenizer):
    ids = {}
    for tok in smoke.SPECIAL_TOKENS:
        enc = tokenizer.encode(tok, add_special_tokens=False)
        assert len(enc) == 1, (tok, enc)
        ids[tok] = enc[0]
    assert len(set(ids.values())) == 3
    # Special tokens stay whole inside running text too.
    text = "<|im_start|>user\n你好<|im_end|>\n<|endoftext|>"
    enc = tokenizer.encode(text, add_special_tokens=False)
    assert [i for i in enc if i in ids.values()] == [ids["<|im_start|>"], ids["<|im_end|>"], ids["<|endoftext|>"]]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    for sample in ["你好，世界！今天天气很好。", "混合 mixed 文本 with 数字 123 and émoji 🙂", "  leading spaces\n\ttabs"]:
        assert tokenizer.decode(tokenizer.encode(sample, add_special_tokens=False)) == sample
    assert 1000 <= len(tokenizer) <= 2000


def test_chat_template_is_chatml(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True)
    assert text == (
        f"<|im_start|>system\n{smoke.DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    )


def test_transformers_forward_and_generate(model_dir, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = model.config
    assert cfg.model_type == "qwen2" and cfg.tie_word_embeddings
    assert cfg.vocab_size % 64 == 0 and cfg.vocab_size >= len(tokenizer)
    assert cfg.eos_token_id == tokenizer.eos_token_id and cfg.pad_token_id == tokenizer.pad_token_id
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()

    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello, 你好"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], cfg.vocab_size)
    assert torch.isfinite(logits).all()

    out = model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    prompt_len = inputs["input_ids"].shape[1]
    assert prompt_len < out.shape[1] <= prompt_len + 5
    assert out[0, :prompt_len].tolist() == inputs["input_ids"][0].tolist()


def test_llamafactory_qwen_template(model_dir):
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments, ModelArguments
    from llamafactory.model import load_tokenizer

    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=str(model_dir)))["tokenizer"]
    size_before = len(tokenizer)
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="qwen"))
    # The qwen template's stop word is already our eos, so no tokens (and no resize_vocab) are needed.
    assert len(tokenizer) == size_before
    assert tokenizer.eos_token == "<|im_end|>"

    messages = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "Hello!"}]
    prompt_ids, response_ids = template.encode_oneturn(tokenizer, messages)
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_start in prompt_ids
    assert prompt_ids.count(im_start) == 3  # system, user, assistant header
    assert response_ids.count(im_end) == 1
    assert tokenizer.decode(prompt_ids).endswith("<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(response_ids) == "Hello!<|im_end|>\n"


def test_tiny_model_path_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("LLF_RECIPES_CACHE", str(tmp_path))
    first = smoke.tiny_model_path()
    assert first == tmp_path / smoke.VERSION_TAG
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert smoke.tiny_model_path(tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_tiny_model_path_concurrent_callers_agree(tmp_path):
    # Several processes race for an empty cache: one builds, the others wait and reuse it.
    code = "import os, sys; from llf_recipes.smoke import tiny_model_path as t; p = t(sys.argv[1]); print(p, os.stat(p).st_ino)"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True) for _ in range(3)
    ]
    outs = [proc.communicate(timeout=300)[0].split() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    dest = tmp_path / smoke.VERSION_TAG
    assert outs == [[str(dest), str(dest.stat().st_ino)]] * 3  # nobody rebuilt it under another's feet
    assert {p.name for p in tmp_path.iterdir()} == {smoke.VERSION_TAG, f"{smoke.VERSION_TAG}.lock", f"{smoke.VERSION_TAG}.log"}


def test_main_prints_path(tmp_path, capsys):
    assert smoke.main([str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert (tmp_path / "cli" / "config.json").is_file()

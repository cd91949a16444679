"""A tiny, offline, deterministic Qwen2-family model for smoke-testing recipes.

The model is randomly initialised, so its output is noise; what matters is that
LLaMA-Factory accepts it with ``template: qwen`` and that a CPU run takes seconds.
Heavy imports (torch, transformers, tokenizers) stay inside the functions so
that importing this module costs nothing.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import sys
import uuid
from pathlib import Path

# Bump whenever the corpus, tokenizer settings or architecture change, so that
# stale caches are never reused.
VERSION_TAG = "tiny-qwen2-v2"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
DEFAULT_SYSTEM = "You are a helpful assistant."

# Qwen2-Instruct's ChatML layout, so plain transformers users (apply_chat_template)
# get the same markers that LLaMA-Factory's qwen template emits.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _corpus() -> list[str]:
    """A few hundred short lines, generated combinatorially so the build is reproducible."""
    en_subj = ["The model", "A student", "My friend", "This recipe", "The trainer", "Our team", "Every user"]
    en_verb = ["reads", "writes", "learns", "checks", "loads", "saves", "explains", "remembers"]
    en_adj = ["small", "quiet", "bright", "careful", "strange", "useful", "ancient", "noisy"]
    en_noun = ["dataset", "poem", "config file", "garden", "mountain", "question", "weights", "kitchen", "river"]
    zh_time = ["今天", "昨天", "明天早上", "周末", "晚上"]
    zh_subj = ["我", "你", "他们", "这个模型", "老师", "我们的团队", "小明"]
    zh_place = ["在图书馆", "在家里", "在公园", "在实验室", "在火车上"]
    zh_act = ["学习数学", "阅读中文文本", "检查训练配置", "写一首短诗", "保存模型权重", "喝绿茶", "讨论天气"]
    qa = [("What is a tokenizer?", "A tokenizer splits text into ids."),
          ("How do I fine-tune a model?", "Use LoRA with a small learning rate."),
          ("什么是大语言模型？", "大语言模型是一种根据上下文预测下一个词的模型。"),
          ("请用一句话介绍你自己。", "我是一个有用的助手，可以回答问题。"),
          ("Translate 你好 into English.", "你好 means hello."),
          ("北京的天气怎么样？", "北京今天晴天，气温二十度。"),
          ("Give me a haiku.", "Quiet morning rain / the kettle hums a soft tune / tea leaves slowly sink")]
    # The strides thin each full product to a few hundred lines while keeping every word in play.
    lines = [f"{s} {v} the {a} {n}." for s, v, a, n in itertools.product(en_subj, en_verb, en_adj, en_noun)][::11]
    lines += [f"{t}{s}{p}{a}。" for t, s, p, a in itertools.product(zh_time, zh_subj, zh_place, zh_act)][::5]
    # Chat-shaped fragments teach merges for the role names the ChatML template emits.
    lines += [f"system\n{DEFAULT_SYSTEM}\nuser\n{q}\nassistant\n{a}" for q, a in qa]
    lines += [f"{i} x {j} = {i * j}" for i in range(1, 10) for j in range(1, 10)]
    return lines


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1500,
        min_frequency=1,  # the corpus is small; frequency-2 merges alone stop well short of the target
        special_tokens=SPECIAL_TOKENS,  # registered as special added tokens: never split
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, so any text round-trips
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok


def _build_into(out: Path, seed: int) -> None:
    # transformers imports DeepSpeed when it is installed, and DeepSpeed's accelerator probe logs to stdout on a
    # machine without GPUs; naming the accelerator keeps the build quiet (stdout may be a caller's data).
    previous = os.environ.get("DS_ACCELERATOR")
    os.environ["DS_ACCELERATOR"] = previous or "cpu"
    try:
        _build(out, seed)
    finally:
        if previous is None:
            os.environ.pop("DS_ACCELERATOR", None)


def _build(out: Path, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    eot, im_end = ids["<|endoftext|>"], ids["<|im_end|>"]
    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        # A multiple of 64 keeps the embedding matrix aligned, as real checkpoints do.
        vocab_size=-(-len(tokenizer) // 64) * 64,
        max_position_embeddings=2048,
        # Qwen2.5's rope base, not transformers' default: a reader that misses it (transformers 4 reading a config
        # saved by 5) is caught by the tests instead of passing by coincidence.
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True,
        bos_token_id=eot,
        eos_token_id=im_end,
        pad_token_id=eot,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    # Stop on either end marker, like the released Qwen2 chat checkpoints.
    GenerationConfig(bos_token_id=eot, eos_token_id=[im_end, eot], pad_token_id=eot).save_pretrained(out)
    # Readable alike by transformers 4 (the PPO and EasyR1 engines) and 5: tokenizer class and top-level rope keys.
    from llf_recipes.engines.handoff import make_portable

    make_portable(out)


def build_tiny_model(dest: str | Path, *, seed: int = 0) -> Path:
    """Build the tiny model into ``dest`` (replacing it) and return its path."""
    dest = Path(dest).expanduser().absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex}")
    try:
        _build_into(tmp, seed)
        # Build beside dest and rename, so readers never see a half-written model.
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def default_cache_dir() -> Path:
    return Path(os.environ.get("LLF_RECIPES_CACHE") or Path.home() / ".cache" / "llf-recipes").expanduser()


def tiny_model_path(cache_dir: str | Path | None = None) -> Path:
    """Return the cached tiny model, building it on first use."""
    from filelock import FileLock

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dest = root / VERSION_TAG
    # dest only ever appears via an atomic rename, so its existence means complete.
    if (dest / "config.json").is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{VERSION_TAG}.lock")):
        if not (dest / "config.json").is_file():  # another process may have built it meanwhile
            from llf_recipes.console import output_to

            print(f"building the tiny smoke model in {dest} (once; log: {root / VERSION_TAG}.log)", file=sys.stderr,
                  flush=True)
            with output_to(root / f"{VERSION_TAG}.log"):
                build_tiny_model(dest)
    return dest


# --------------------------------------------------------------------------- smoke runs of any recipe

SMOKE_STEPS = 3
SMOKE_OUTPUT_ROOT = "saves/smoke"
# What a CPU and a 148k-parameter model cannot or need not do: DeepSpeed, fused kernels, GPU precisions.
SMOKE_REMOVED = ("deepspeed", "flash_attn", "enable_liger_kernel", "use_unsloth", "bf16", "fp16", "pure_bf16")
# 4-bit bitsandbytes quantization runs on CPU (bitsandbytes 0.50: nf4/fp4, double quantization), so a QLoRA recipe is
# smoke-tested as written; other bit widths and methods need a GPU and are removed, saying so.
QUANTIZATION_KEYS = ("quantization_bit", "quantization_method", "quantization_type", "double_quantization")
SMOKE_KEYS = {
    "max_steps": SMOKE_STEPS,
    "max_samples": 16,
    "cutoff_len": 256,
    "logging_steps": 1,
    "save_steps": SMOKE_STEPS,
    "per_device_train_batch_size": 2,
    "per_device_eval_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0,
    "report_to": "none",
}


def quantization_blocker(config: dict) -> str | None:
    """Why the config's quantization cannot run on this CPU machine; None when it can (or there is none)."""
    bits = config.get("quantization_bit")
    if bits is None:
        return None
    method = config.get("quantization_method") or "bnb"
    if method != "bnb":
        return f"quantization_method {method} needs a GPU"
    if bits != 4:
        return f"{bits}-bit bitsandbytes needs a GPU; 4-bit runs on CPU"
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return 'bitsandbytes is not installed (pip install -e ".[train]")'
    return None


def evaluates_before_the_end(config: dict) -> bool:
    """Whether a training stage runs an evaluation pass before its last step.

    bitsandbytes (0.50) repacks 4-bit weights for CPU inference during an evaluation pass and keeps them packed when
    training resumes, whose next step then fails ("a view of a leaf Variable ... in-place operation").
    """
    if not (config.get("val_size") or config.get("eval_dataset")):
        return False
    strategy = str(config.get("eval_strategy") or "no")
    if strategy == "epoch":
        return True
    if strategy != "steps":
        return False
    total = int(config.get("max_steps") or 0)
    every = config.get("eval_steps")
    try:
        every = float(every) if every is not None else float(config.get("logging_steps") or 500)
    except (TypeError, ValueError):
        return False
    steps = math.ceil(every * total) if every < 1 else int(every)
    return total <= 0 or steps < total


SMOKE_BLOCK = "smoke run (--smoke)"  # where the rendered YAML lists the keys smoke added


def apply_smoke(rendered_stages, model_path: str | Path, user_keys=None) -> dict[str, list[str]]:
    """Turn rendered stages into a few CPU steps on the tiny model; data, template and wiring stay the recipe's.

    `user_keys` (Overrides.keys: stage or None -> {key: value}) are what `--set` asked for: they win over smoke's.
    Returns, per stage, the keys it removed that change what is tested (quantization), each with the reason.
    """
    user_keys = user_keys or {}
    removed: dict[str, list[str]] = {}
    for rendered in rendered_stages:
        config = rendered.config
        mine = {**user_keys.get(None, {}), **user_keys.get(rendered.stage.name, {})}
        from llf_recipes import engines

        if engines.get(rendered.engine).planner == "llf":  # llf-recipes' own verbs: sized down when planned
            continue
        for key in SMOKE_REMOVED:
            config.pop(key, None)
        rendered.deepspeed_source = None
        rendered.deepspeed_profile = None
        config["model_name_or_path"] = str(model_path)
        if rendered.verb == "train":
            config.update(SMOKE_KEYS)
            if config.get("val_size") or config.get("eval_dataset"):
                config["eval_steps"] = SMOKE_STEPS
        if config.get("stage") == "ppo":
            config["max_new_tokens"] = 16
        for key in set(config) - set(rendered.blocks) - set(mine):  # smoke's own keys, not the user's --set
            rendered.blocks[key] = SMOKE_BLOCK
        config.update(mine)
        blocker = quantization_blocker(config)
        if not blocker and config.get("quantization_bit") is not None and evaluates_before_the_end(config):
            blocker = "bitsandbytes on CPU cannot train on after an evaluation pass; evaluate at the last step"
        if blocker:
            gone = [key for key in QUANTIZATION_KEYS if config.pop(key, None) is not None]
            removed[rendered.stage.name] = [f"{', '.join(gone)} ({blocker})"]
        from llf_recipes import engines

        engines.adapt(rendered)  # a --set value in the main dialect, translated for the stage's engine
    return removed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or any(a in ("-h", "--help") for a in args):
        print("usage: python -m llf_recipes.smoke [DEST]", file=sys.stderr)
        return 2
    path = build_tiny_model(args[0]) if args else tiny_model_path()
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

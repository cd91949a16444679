"""A stand-in for vLLM's offline engine (vLLM needs an NVIDIA GPU): a `vllm` package with the names `generate
--backend vllm` uses (LLM, SamplingParams, lora.request.LoRARequest) and distribution metadata in the version
LLaMA-Factory 0.9.5 accepts. Its LLM answers each prompt's token ids with transformers' `generate` on the same model,
so what it writes depends on what the caller handed it: the encoded prompt, the stop tokens, the length, the
repetition penalty, the number of answers and the per-prompt seed. Every call is recorded in `LLM.calls`."""

from __future__ import annotations

from pathlib import Path

VERSION = "0.11.0"

PACKAGE = '''
from types import SimpleNamespace


class SamplingParams:
    def __init__(self, n=1, temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, max_tokens=16,
                 stop_token_ids=None, skip_special_tokens=True, seed=None):
        if top_k == 0 or top_k < -1:  # as vLLM before 0.8 (LLaMA-Factory takes 0.4.3 on): off is -1
            raise ValueError(f"top_k must be -1 (disable), or at least 1, got {top_k}.")
        self.__dict__.update(n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                             repetition_penalty=repetition_penalty, max_tokens=max_tokens,
                             stop_token_ids=list(stop_token_ids or []), skip_special_tokens=skip_special_tokens,
                             seed=seed)


class LLM:
    engines = []  # every engine made, with the arguments it was made with
    calls = []  # (prompt token ids, SamplingParams, lora_request) per prompt

    def __init__(self, model, **kwargs):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.args = {"model": model, **kwargs}
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        LLM.engines.append(self)

    def generate(self, prompts, params, lora_request=None, use_tqdm=True):
        import torch

        outputs = []
        for prompt, p in zip(prompts, params):
            LLM.calls.append((list(prompt["prompt_token_ids"]), p, lora_request))
            ids = torch.tensor([prompt["prompt_token_ids"]])
            sample = p.temperature > 0
            if p.seed is not None:
                torch.manual_seed(p.seed)
            kwargs = dict(temperature=p.temperature, top_p=p.top_p, top_k=max(p.top_k, 0)) if sample else {}
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=sample,
                                      max_new_tokens=p.max_tokens, repetition_penalty=p.repetition_penalty,
                                      eos_token_id=p.stop_token_ids, num_return_sequences=p.n,
                                      pad_token_id=p.stop_token_ids[0], **kwargs)
            texts = [self.tokenizer.decode(o[ids.shape[1]:], skip_special_tokens=p.skip_special_tokens) for o in out]
            outputs.append(SimpleNamespace(outputs=[SimpleNamespace(text=t) for t in texts]))
        return outputs
'''


def install(where: Path, version: str = VERSION) -> Path:
    """Write the stand-in package and its metadata (as `version`) into `where` (to put first on sys.path); returns
    `where`."""
    (where / "vllm" / "lora").mkdir(parents=True)
    (where / "vllm" / "__init__.py").write_text(f"__version__ = {version!r}\n" + PACKAGE)
    (where / "vllm" / "lora" / "__init__.py").write_text("")
    (where / "vllm" / "lora" / "request.py").write_text(
        "class LoRARequest:\n"
        "    def __init__(self, name, id, path):\n"
        "        self.lora_name, self.lora_int_id, self.lora_path = name, id, path\n")
    meta = where / f"vllm-{version}.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    return where

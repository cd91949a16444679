"""A stand-in model whose answer is fixed: a real transformers model class (loaded through AutoModelForCausalLM with
the model directory's own code, as any custom hub model is) that writes the same completion to every prompt.

With a fixed answer the accuracy of a set is known before anything runs: the share of rows whose reference is that
answer. It uses the tiny model's tokenizer and chat template.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

MODELING = '''
import torch
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput


class FixedAnswerConfig(PretrainedConfig):
    model_type = "fixed_answer"

    def __init__(self, answer_ids=(), vocab_size=2, **kwargs):
        self.answer_ids = list(answer_ids)
        self.vocab_size = vocab_size
        super().__init__(**kwargs)


class FixedAnswerModel(PreTrainedModel, GenerationMixin):
    """Next token: the answer token after the longest answer prefix the sequence ends with; eos once it is all out."""

    config_class = FixedAnswerConfig
    base_model_prefix = "fixed"
    supports_gradient_checkpointing = True  # nothing to checkpoint; trainers ask for it

    def __init__(self, config):
        super().__init__(config)
        self.scale = torch.nn.Parameter(torch.ones(1))
        # Something for a LoRA adapter to attach to and for trainers to find; it adds nothing to the logits.
        self.embed = torch.nn.Embedding(config.vocab_size, 4)
        self.proj = torch.nn.Linear(4, 4, bias=False)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed

    def set_input_embeddings(self, value):
        self.embed = value

    def _next(self, seq):
        answer = self.config.answer_ids
        done = 0
        for k in range(min(len(answer), len(seq)), 0, -1):
            if seq[-k:] == answer[:k]:
                done = k
                break
        return answer[done] if done < len(answer) else self.config.eos_token_id

    def forward(self, input_ids=None, attention_mask=None, labels=None, logits_to_keep=0, **kwargs):
        rows = input_ids.tolist()
        width = len(rows[0])
        keep = logits_to_keep if isinstance(logits_to_keep, int) and 0 < logits_to_keep <= width else width
        logits = torch.zeros(len(rows), keep, self.config.vocab_size, device=input_ids.device)
        for i, seq in enumerate(rows):
            for j, t in enumerate(range(width - keep, width)):
                logits[i, j, self._next(seq[: t + 1])] = 100.0
        touch = self.proj(self.embed(input_ids)).sum() * 0.0
        return CausalLMOutput(logits=logits * self.scale + touch)
'''


def build(dest: Path, tiny_model: Path, answer: str) -> Path:
    """A model directory answering `answer` to everything, with the tiny model's tokenizer."""
    from transformers import AutoTokenizer

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model / name).is_file():
            shutil.copyfile(tiny_model / name, dest / name)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    base = json.loads((tiny_model / "config.json").read_text())
    (dest / "modeling_fixed.py").write_text(MODELING)
    config = {
        "model_type": "fixed_answer", "architectures": ["FixedAnswerModel"],
        "auto_map": {"AutoConfig": "modeling_fixed.FixedAnswerConfig",
                     "AutoModelForCausalLM": "modeling_fixed.FixedAnswerModel"},
        "answer_ids": tokenizer(answer, add_special_tokens=False)["input_ids"], "vocab_size": base["vocab_size"],
        "eos_token_id": base["eos_token_id"], "pad_token_id": base.get("pad_token_id"), "use_cache": False,
    }
    (dest / "config.json").write_text(json.dumps(config))
    (dest / "generation_config.json").write_text(json.dumps({"eos_token_id": base["eos_token_id"], "use_cache": False}))
    import torch
    from safetensors.torch import save_file

    save_file({"scale": torch.ones(1), "proj.weight": torch.zeros(4, 4),
               "embed.weight": torch.zeros(base["vocab_size"], 4)}, str(dest / "model.safetensors"))
    return dest

"""How a model generates, the same for ask, chat, serve and generate: the generating arguments LLaMA-Factory reads,
checked before any model loads, and the inference backend (LLaMA-Factory's Hugging Face engine or vLLM).

No torch here: the CUDA check imports it only once vLLM is known to be installed (vLLM brings torch with it).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

from llf_recipes.errors import LlfError

# LLaMA-Factory's own generating defaults (GeneratingArguments), but for a shorter longest answer.
DEFAULTS: dict[str, Any] = {"temperature": 0.95, "top_p": 0.7, "top_k": 50, "repetition_penalty": 1.0,
                            "max_new_tokens": 512}
BACKENDS = {"hf": "huggingface", "vllm": "vllm"}  # our name -> LLaMA-Factory's infer_backend
# The vLLM versions LLaMA-Factory 0.9.5 accepts (its requirements/vllm.txt and its parser's check_version).
VLLM_RANGE = ">=0.4.3,<=0.11.0"
VLLM_INSTALL = "pip install 'llf-recipes[vllm]' (vllm 0.11.0) on a machine with an NVIDIA GPU"


def generating_args(*, temperature: float, top_p: float, top_k: int, repetition_penalty: float,
                    max_new_tokens: int) -> dict[str, Any]:
    """The checked values, spelt as LLaMA-Factory's generating arguments; a bad one names its option.

    Greedy decoding is `temperature: 0` (do_sample stays LLaMA-Factory's default): its Hugging Face engine then turns
    sampling off and vLLM decodes greedily, and a request to `serve` that sets a temperature still samples."""
    if max_new_tokens < 1:
        raise LlfError(f"--max-new-tokens {max_new_tokens} must be at least 1", key="--max-new-tokens")
    if not temperature >= 0:  # also NaN
        raise LlfError(f"--temperature {temperature:g} must be 0 or more", key="--temperature",
                       fix="0 decodes greedily (the same answer every time); 0.7 to 1.0 samples")
    if not 0 < top_p <= 1:
        raise LlfError(f"--top-p {top_p:g} must be above 0 and at most 1", key="--top-p",
                       fix="1 keeps every token; 0.9 keeps the most likely tokens that make up 90% of the probability")
    if top_k < 0:  # 0 is off, as transformers and LLaMA-Factory read it
        raise LlfError(f"--top-k {top_k} must be 0 or more", key="--top-k",
                       fix="0 keeps every token (top-k off); 50 is LLaMA-Factory's default")
    if not repetition_penalty > 0:
        raise LlfError(f"--repetition-penalty {repetition_penalty:g} must be above 0", key="--repetition-penalty",
                       fix="1.0 leaves repetitions alone; 1.1 discourages them")
    return {"temperature": temperature, "top_p": top_p, "top_k": top_k, "repetition_penalty": repetition_penalty,
            "max_new_tokens": max_new_tokens}


def vllm_top_k(top_k: int) -> int:
    """vLLM's spelling of a top-k: off is -1 in every version LLaMA-Factory takes (before 0.8 vLLM refuses 0; later
    ones still take -1), as LLaMA-Factory's own vLLM engine passes it."""
    return top_k if top_k > 0 else -1


def is_greedy(sampling: dict[str, Any]) -> bool:
    return sampling.get("temperature") == 0 or sampling.get("do_sample") is False


def infer_backend(backend: str) -> str:
    """LLaMA-Factory's infer_backend for `--backend`; vLLM is checked to be usable here before any model loads."""
    if backend not in BACKENDS:
        raise LlfError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}", key="--backend")
    if backend == "vllm":
        require_vllm()
    return BACKENDS[backend]


def require_vllm() -> None:
    """vLLM installed in a version LLaMA-Factory accepts, and a CUDA device to run it on."""
    if importlib.util.find_spec("vllm") is None:
        raise LlfError("--backend vllm needs the vllm package, which is not installed", key="--backend",
                       fix=f"{VLLM_INSTALL}; or use --backend hf")
    try:
        version = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is not None:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version

        try:
            inside = Version(version) in SpecifierSet(VLLM_RANGE)
        except InvalidVersion:
            inside = False
        if not inside:
            raise LlfError(f"--backend vllm: vllm {version} is installed, LLaMA-Factory 0.9.5 takes vllm{VLLM_RANGE}",
                           key="--backend", fix=VLLM_INSTALL)
    import torch  # vLLM depends on it, so it is there

    if not torch.cuda.is_available():
        raise LlfError("--backend vllm needs a CUDA device, and this machine has none", key="--backend",
                       fix="run it on a machine with an NVIDIA GPU, or use --backend hf (CPU or GPU)")

"""How a model generates, the same for ask, chat, serve and generate: the generating arguments LLaMA-Factory reads,
checked before any model loads, and the inference backend (LLaMA-Factory's Hugging Face engine or vLLM).

No torch here: LLaMA-Factory's vLLM range is read from its source, and the caller counts the CUDA devices (the
driver's, narrowed by CUDA_VISIBLE_DEVICES), so a refusal comes before anything heavy loads.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError

# LLaMA-Factory's own generating defaults (GeneratingArguments), but for a shorter longest answer.
DEFAULTS: dict[str, Any] = {"temperature": 0.95, "top_p": 0.7, "top_k": 50, "repetition_penalty": 1.0,
                            "max_new_tokens": 512}
BACKENDS = {"hf": "huggingface", "vllm": "vllm"}  # our name -> LLaMA-Factory's infer_backend
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


def infer_backend(backend: str, cuda_devices: Callable[[], int]) -> str:
    """LLaMA-Factory's infer_backend for `--backend`; vLLM is checked to be usable here before any model loads
    (`cuda_devices`: how many CUDA devices a process started here sees)."""
    if backend not in BACKENDS:
        raise LlfError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}", key="--backend")
    if backend == "vllm":
        require_vllm(cuda_devices)
    return BACKENDS[backend]


@cache
def llamafactory_vllm_range() -> tuple[str, str] | None:
    """(LLaMA-Factory's version, the vLLM versions it accepts), read from the check its argument parser makes
    (`check_version("vllm>=...")` in llamafactory/hparams/parser.py) without importing it, which would load torch;
    None when LLaMA-Factory is not installed or names no range (its own check still runs when it parses the args)."""
    spec = importlib.util.find_spec("llamafactory")
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))) / "hparams" / "parser.py"
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), str(source))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        found = re.fullmatch(r"vllm\s*([<>=!~].*)", str(node.args[0].value)) if name == "check_version" else None
        if found:
            try:
                version = importlib.metadata.version("llamafactory")
            except importlib.metadata.PackageNotFoundError:
                version = "?"
            return version, found.group(1).replace(" ", "")
    return None


def require_vllm(cuda_devices: Callable[[], int]) -> None:
    """vLLM installed in a version LLaMA-Factory accepts, and a CUDA device to run it on."""
    if importlib.util.find_spec("vllm") is None:
        raise LlfError("--backend vllm needs the vllm package, which is not installed", key="--backend",
                       fix=f"{VLLM_INSTALL}; or use --backend hf")
    try:
        version = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        version = None
    accepted = llamafactory_vllm_range()
    if version is not None and accepted is not None:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
        from packaging.version import InvalidVersion, Version

        lf_version, wanted = accepted
        try:
            inside = Version(version) in SpecifierSet(wanted)
        except (InvalidVersion, InvalidSpecifier):
            inside = False
        if not inside:
            raise LlfError(f"--backend vllm: vllm {version} is installed, LLaMA-Factory {lf_version} takes vllm{wanted}",
                           key="--backend", fix=VLLM_INSTALL)
    if cuda_devices() < 1:
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = "this machine has none" if hidden is None else f"CUDA_VISIBLE_DEVICES={hidden!r} leaves none"
        raise LlfError(f"--backend vllm needs a CUDA device, and {where}", key="--backend",
                       fix="run it on a machine with an NVIDIA GPU, or use --backend hf (CPU or GPU)")

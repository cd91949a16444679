"""Keys that need an optional package: LLaMA-Factory stops at start-up (or at model load) when it is missing.

Whether a package is installed is read from the distribution metadata directories on sys.path (what LLaMA-Factory's
own version checks read), so no package (and no torch) is imported; importlib.metadata itself is left out because
importing it costs more than the whole check.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from functools import cache

from llf_recipes.schema.findings import Collector, LaunchInfo, Settings

TRAIN_EXTRA = "pip install 'llf-recipes[train]'"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _distributions() -> frozenset[str]:
    found = set()
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                found.add(_normalize(name.rsplit(".", 1)[0].split("-")[0]))
    return frozenset(found)


def installed(distribution: str) -> bool:
    """Whether a distribution (a pip name: `galore-torch`, `rouge_chinese`) is installed in this environment."""
    return _normalize(distribution) in _distributions()


def _needs(s: Settings, verb: str) -> list[tuple[str, str, str, str]]:
    """(key, the value that needs it, distribution, pip requirement) for every package the config needs."""
    out: list[tuple[str, str, str, str]] = []

    def need(key: str, what: str, *packages: str) -> None:
        for pkg in packages:
            out.append((key, what, pkg, pkg))

    if s.on("use_unsloth"):
        need("use_unsloth", "use_unsloth: true", "unsloth")
    if s.on("use_kt"):
        need("use_kt", "use_kt: true", "kt-kernel", "transformers-kt", "accelerate-kt")
    if s.on("enable_liger_kernel"):
        need("enable_liger_kernel", "enable_liger_kernel: true", "liger-kernel")
    if s.set("mixture_of_depths"):
        need("mixture_of_depths", f"mixture_of_depths: {s['mixture_of_depths']}", "mixture-of-depth")
    backend = s.text("infer_backend")
    if backend in ("vllm", "sglang"):
        need("infer_backend", f"infer_backend: {backend}", backend)
    for key, pkg in (("use_galore", "galore-torch"), ("use_apollo", "apollo-torch"), ("use_badam", "badam"),
                     ("use_adam_mini", "adam-mini"), ("use_swanlab", "swanlab"), ("plot_loss", "matplotlib")):
        if s.on(key):
            need(key, f"{key}: true", pkg)
    if verb == "train":
        if s.set("deepspeed"):
            need("deepspeed", "deepspeed", "deepspeed")
        if s.on("predict_with_generate"):
            need("predict_with_generate", "predict_with_generate: true", "jieba", "nltk", "rouge-chinese")
    method = s.text("quantization_method") or "bnb"
    if s.set("quantization_bit") and method in ("bnb", "hqq", "eetq"):
        need("quantization_bit", f"quantization_bit with quantization_method {method}",
             {"bnb": "bitsandbytes", "hqq": "hqq", "eetq": "eetq"}[method])
    return out


def check_packages(s: Settings, verb: str, launch: LaunchInfo, report: Collector,
                   is_installed: Callable[[str], bool] = installed) -> None:
    for key, what, dist, req in _needs(s, verb):
        if is_installed(dist):
            continue
        extra = f" (or {TRAIN_EXTRA})" if dist in ("deepspeed", "bitsandbytes") else ""
        if launch.remote:
            report.add("missing-package", key, f"{what} needs the {dist} package, which is not installed here",
                       f"make sure every node has it: pip install {req}{extra}", "warning")
        else:
            report.add("missing-package", key, f"{what} needs the {dist} package, which is not installed",
                       f"pip install {req}{extra}")
    if s.text("flash_attn") == "fa2" and not is_installed("flash-attn"):
        # LLaMA-Factory logs "FlashAttention-2 is not installed" and falls back to the default attention.
        report.add("missing-package", "flash_attn", "flash_attn: fa2 needs the flash-attn package; without it "
                   "LLaMA-Factory silently uses the default attention", "pip install flash-attn --no-build-isolation, "
                   "or set flash_attn: sdpa", "warning")


RULES = ("missing-package",)

"""A stand-in for EasyR1's environment (EasyR1 itself needs NVIDIA GPUs): a `verl` package shaped like EasyR1's
(verl/trainer/main.py, no main_ppo.py) whose main is the test's own, and distribution metadata with the versions
EasyR1 pins (omegaconf 2.3, transformers 4, vllm, flash-attn), put first on PYTHONPATH of this interpreter."""

from __future__ import annotations

from pathlib import Path

VERSIONS = {"verl": "0.3.3.dev0", "omegaconf": "2.3.0", "transformers": "4.54.1", "vllm": "0.8.5",
            "flash_attn": "2.7.4"}


def lock_versions() -> dict[str, str]:
    """A version for every requirement of the easyr1 engine's lock that this interpreter lacks (the lowest it allows,
    else 1.0), so the stand-in environment satisfies the lock as EasyR1's own would."""
    import importlib.metadata as md

    from llf_recipes.engines import get
    from llf_recipes.engines.easyr1.nodes import lock_requirements

    out = {}
    for name, spec in lock_requirements(get("easyr1")):
        try:
            md.version(name)
            continue
        except md.PackageNotFoundError:
            pass
        floor = next((part[2:] for part in spec.split(",") if part.startswith(">=")), "1.0")
        out[name.replace("-", "_")] = floor
    return out


def make(root: Path, main: str) -> Path:
    """Write the stand-in under root; returns the directory to put first on PYTHONPATH."""
    trainer = root / "verl" / "trainer"
    trainer.mkdir(parents=True)
    (root / "verl" / "__init__.py").write_text("")
    (trainer / "__init__.py").write_text("")
    (trainer / "main.py").write_text(main)
    (trainer / "config.py").write_text("")
    for module in ("vllm", "flash_attn"):  # importable, as the engine check asks
        (root / module).mkdir()
        (root / module / "__init__.py").write_text("")
    for dist, version in {**lock_versions(), **VERSIONS}.items():
        info = root / f"{dist}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: {version}\n")
    return root

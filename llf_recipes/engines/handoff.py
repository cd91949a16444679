"""Model directories that both transformers 4 and 5 read the same way.

transformers 5 saves two things transformers 4 misreads: `tokenizer_config.json` names `TokenizersBackend`, a class 4
does not have (loading fails), and `config.json` keeps `rope_theta` only under `rope_parameters`, so 4 silently uses
its default (10000.0; Qwen2.5 uses 1000000.0). `make_portable` rewrites both in the form each version reads alike
(`PreTrainedTokenizerFast` gives the same ids in both; top-level `rope_theta`/`rope_scaling` beside
`rope_parameters`). `check` is what runs before a model directory goes to an engine of the other major version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError

PORTABLE_TOKENIZER = "PreTrainedTokenizerFast"
V5_ONLY_TOKENIZERS = {"TokenizersBackend"}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, data: dict[str, Any]) -> None:
    from llf_recipes.atomic import write_text

    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def rope_for_v4(config: dict[str, Any]) -> dict[str, Any]:
    """The top-level keys transformers 4 reads for what `rope_parameters` says ({} when there is nothing to add)."""
    params = config.get("rope_parameters")
    if not isinstance(params, dict) or "rope_theta" not in params:
        return {}
    scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    kind = scaling.get("rope_type", "default")
    return {"rope_theta": params["rope_theta"],
            "rope_scaling": None if kind == "default" else {**scaling, "type": kind}}


def make_portable(model_dir: str | Path) -> list[str]:
    """Rewrite a model directory in place so transformers 4 reads it as 5 does; one line per change."""
    model_dir = Path(model_dir)
    changes: list[str] = []
    config_path = model_dir / "config.json"
    config = _read(config_path)
    if config is not None:
        wanted = rope_for_v4(config)
        missing = {k: v for k, v in wanted.items() if k not in config}
        if missing:
            _write(config_path, {**config, **missing})
            changes.append(f"{config_path}: " + ", ".join(f"{k}: {v}" for k, v in missing.items()))
    tok_path = model_dir / "tokenizer_config.json"
    tok = _read(tok_path)
    if tok is not None and tok.get("tokenizer_class") in V5_ONLY_TOKENIZERS and (model_dir / "tokenizer.json").is_file():
        _write(tok_path, {**tok, "tokenizer_class": PORTABLE_TOKENIZER})
        changes.append(f"{tok_path}: tokenizer_class {tok['tokenizer_class']} -> {PORTABLE_TOKENIZER}")
    return changes


def problems(model_dir: str | Path, major: int) -> list[tuple[str, str, str]]:
    """(file, key, what is wrong) for a directory handed to transformers `major`; [] when it reads it correctly."""
    model_dir = Path(model_dir)
    if major >= 5 or not model_dir.is_dir():
        return []
    out = []
    config_path = model_dir / "config.json"
    config = _read(config_path) or {}
    for key, value in rope_for_v4(config).items():
        if config.get(key) != value:  # an absent rope_scaling reads as None, which is right for the default rope
            what = (f"is {config.get(key, 'absent')!r} but rope_parameters says {value!r}; "
                    f"transformers {major} would read its own default")
            out.append((str(config_path), key, what))
    tok_path = model_dir / "tokenizer_config.json"
    tok_class = (_read(tok_path) or {}).get("tokenizer_class")
    if tok_class in V5_ONLY_TOKENIZERS:
        out.append((str(tok_path), "tokenizer_class", f"{tok_class} exists only in transformers 5"))
    return out


def check(model_dir: str | Path, major: int, engine: str, stage: str) -> None:
    """Raise LlfError naming the file and key when `model_dir` would be misread by the engine's transformers."""
    found = problems(model_dir, major)
    if found:
        path, key, what = found[0]
        raise LlfError(f"stage {stage} hands {model_dir} to engine {engine} (transformers {major}), but {key} {what}",
                       key=key, where=path,
                       fix=f"python -m llf_recipes.engines.handoff {model_dir}   (rewrites it so both versions read it alike)")


def main(argv: list[str] | None = None) -> int:
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args or any(a in ("-h", "--help") for a in args):
        print("usage: python -m llf_recipes.engines.handoff MODEL_DIR [MODEL_DIR ...]", file=sys.stderr)
        return 2
    for d in args:
        for line in make_portable(d) or [f"{d}: nothing to change"]:
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

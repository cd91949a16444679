"""`llf-recipes serve`: an OpenAI-compatible API for a run's model (llamafactory-cli api)."""

from __future__ import annotations

import os
from pathlib import Path

from llf_recipes.cli.common import add_run_target, add_verb, run_from
from llf_recipes.errors import LlfError
from llf_recipes.launch import stream
from llf_recipes.use import inference_yaml


def add_parser(sub) -> None:
    p = add_verb(sub, "serve", "serve a run's model over an OpenAI-compatible HTTP API (llamafactory-cli api)", """
        llf-recipes serve saves/zhihu/dpo-merged --port 8000
        llf-recipes serve zhihu --host 0.0.0.0 --api-key-file ~/.llf-api-key --model-name zhihu-dpo
        LLF_API_KEY=secret llf-recipes serve zhihu --host 0.0.0.0
        curl localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
          -d '{"model": "zhihu-dpo", "messages": [{"role": "user", "content": "hi"}]}'
    """)
    add_run_target(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key", help="require this bearer token (other users see it in `ps`: prefer --api-key-file "
                                       "or $LLF_API_KEY)")
    key.add_argument("--api-key-file", metavar="FILE", help="require the bearer token on the first line of FILE")
    p.add_argument("--model-name", help="the model id clients pass (default: the run's recipe/stage)")
    p.add_argument("--max-new-tokens", type=int, default=512, metavar="N")
    p.set_defaults(func=main)


def main(args) -> int:
    run_dir, data = run_from(args)
    path = inference_yaml(run_dir, data, "serve", args.max_new_tokens)
    recipe = (data.get("recipe") or {}).get("name", "model")
    env = {"API_HOST": args.host, "API_PORT": str(args.port),
           "API_MODEL_NAME": args.model_name or f"{recipe}/{data.get('stage', '')}".rstrip("/")}
    key = api_key(args)
    if key:
        env["API_KEY"] = key  # the server's environment, never a command line
    print(f"serving {run_dir} at http://{args.host}:{args.port}/v1 as {env['API_MODEL_NAME']!r} (Ctrl-C stops)", flush=True)
    return stream(["llamafactory-cli", "api", str(path)], env, run_dir / "llf-serve.log")


def api_key(args) -> str | None:
    """--api-key, else the first line of --api-key-file, else $LLF_API_KEY; None: no key required."""
    if args.api_key:
        return args.api_key
    if args.api_key_file:
        path = Path(args.api_key_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise LlfError(f"cannot read the API key: {getattr(exc, 'strerror', None) or exc}", where=str(path),
                           key="--api-key-file", fix="give a readable UTF-8 file holding the key on its first line") from None
        if not lines or not lines[0].strip():
            raise LlfError("the first line holds no API key", where=str(path), key="--api-key-file")
        return lines[0].strip()
    return os.environ.get("LLF_API_KEY") or None

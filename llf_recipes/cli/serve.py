"""`llf-recipes serve`: an OpenAI-compatible API for a run's model (llamafactory-cli api)."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from pathlib import Path

from llf_recipes.cli.common import add_run_target, add_sampling_args, add_verb, backend_from, run_from, sampling_from
from llf_recipes.console import EngineEcho, print_tail
from llf_recipes.errors import LlfError
from llf_recipes.launchers.local import stream
from llf_recipes.use import inference_yaml


def add_parser(sub) -> None:
    p = add_verb(sub, "serve", "serve a run's model over an OpenAI-compatible HTTP API (llamafactory-cli api)", """
        llf-recipes serve saves/zhihu/dpo-merged --port 8000
        llf-recipes serve zhihu --host 0.0.0.0 --api-key-file ~/.llf-api-key --model-name zhihu-dpo
        API_KEY=secret llf-recipes serve zhihu --host 0.0.0.0
        llf-recipes serve saves/zhihu/dpo-merged --backend vllm --temperature 0.7 --top-p 0.9   # requests may override
        curl localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
          -d '{"model": "zhihu-dpo", "messages": [{"role": "user", "content": "hi"}]}'
    """)
    add_run_target(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=port_number, default=8000, help="port to listen on (default: 8000); checked before the model "
                                                         "loads")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key", help="require this bearer token (other users see it in `ps`: prefer --api-key-file "
                                       "or $API_KEY)")
    key.add_argument("--api-key-file", metavar="FILE", help="require the bearer token on the first line of FILE")
    p.add_argument("--model-name", help="the model id clients pass (default: the run's recipe/stage)")
    add_sampling_args(p)  # defaults for requests that do not set their own
    p.set_defaults(func=main)


def main(args) -> int:
    sampling, backend = sampling_from(args), backend_from(args)
    run_dir, data = run_from(args)
    check_bind(args.host, args.port)
    path = inference_yaml(run_dir, data, "serve", sampling, backend)
    recipe = (data.get("recipe") or {}).get("name", "model")
    env = {"API_HOST": args.host, "API_PORT": str(args.port),
           "API_MODEL_NAME": args.model_name or f"{recipe}/{data.get('stage', '')}".rstrip("/")}
    key = api_key(args)
    if key:
        env["API_KEY"] = key  # the server's environment, never a command line
    how = ("API key: --api-key" if args.api_key else f"API key: from {args.api_key_file}" if args.api_key_file
           else "API key: $API_KEY from the environment" if os.environ.get("API_KEY")
           else "no API key: anyone who reaches the port can use it")
    log = run_dir / "llf-serve.log"
    print(f"serving {run_dir} at http://{args.host}:{args.port}/v1 as {env['API_MODEL_NAME']!r}; {how} "
          f"(Ctrl-C stops; log: {log})", flush=True)
    shown = EngineEcho()

    def echo(line: bytes) -> None:
        shown(line)
        if not shown.verbose and b"Uvicorn running on" in line:
            print(f"ready: http://{args.host}:{args.port}/v1/models lists the model", flush=True)

    # LLaMA-Factory's API app (what `llamafactory-cli api` runs), behind serve_app's check of each request
    code = stream([sys.executable, "-m", "llf_recipes.serve_app", str(path)], env, log, echo=echo)
    if code not in (0, 130):
        print_tail(log, "serve")
    return code


def port_number(text: str) -> int:
    """--port: a TCP port, 1-65535 (argparse turns the ValueError into a one-line usage error)."""
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (1-65535)")
    return port


def check_bind(host: str, port: int) -> None:
    """Stop before the model loads when the server could not listen on host:port, saying why."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise LlfError(f"cannot resolve host {host!r}: {getattr(exc, 'strerror', None) or exc}", key="--host",
                       fix="give an address of this machine (127.0.0.1, 0.0.0.0 for all) or a name that resolves"
                       ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LlfError(f"port {port} on {host} is already in use", key="--port",
                               fix=f"pick another port (--port {port % 65535 + 1}), or stop what listens on it"
                               ) from None
            if exc.errno == errno.EACCES:
                raise LlfError(f"no permission to listen on port {port} on {host}", key="--port",
                               fix="pick a port above 1023 (ports below need root)") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise LlfError(f"{host} is not an address of this machine, so nothing can listen on it", key="--host",
                               fix="give one of this machine's addresses (127.0.0.1, or 0.0.0.0 for all)") from None
            raise LlfError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", key="--host") from None


def api_key(args) -> str | None:
    """--api-key, else the first line of --api-key-file; None: the server reads $API_KEY (if set) itself."""
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
    return None

"""`llf-recipes engine list|install|check|path`: the environments stages run on."""

from __future__ import annotations

import json
import sys

from llf_recipes.cli.verb import add_verb


def add_parser(sub) -> None:
    p = add_verb(sub, "engine", "list, install and check the engine environments stages run on", """
        llf-recipes engine list
        llf-recipes engine install llamafactory-ppo        # PPO: LLaMA-Factory 0.9.3 + trl 0.9.6, built with uv
        llf-recipes engine install llamafactory-ppo --find-links /mnt/wheels --offline
        llf-recipes engine check llamafactory-ppo
        llf-recipes engine path llamafactory-ppo           # its interpreter, for scripts
        llf-recipes engine list --engine llamafactory-ppo=/opt/ppo/bin/python
    """)
    p.add_argument("action", choices=("list", "install", "check", "path"),
                   help="list the engines; install, check or print the interpreter path of one")
    p.add_argument("name", nargs="?", help="engine name (install, check, path)")
    p.add_argument("--engine", action="append", default=[], metavar="NAME=PYTHON",
                   help="use an existing interpreter for an engine (repeatable)")
    p.add_argument("--find-links", action="append", default=[], metavar="DIR", help="install: also look for wheels in DIR")
    p.add_argument("--offline", action="store_true", help="install: no network (uv's cache and --find-links only)")
    p.add_argument("--force", action="store_true", help="install: rebuild an installed engine")
    p.add_argument("--no-uv", action="store_true", help="install: use python -m venv and pip even where uv is present")
    p.add_argument("--source", metavar="DIR", help="install easyr1: the EasyR1 checkout to install (it is not on PyPI)")
    p.add_argument("--json", action="store_true", help="list, check: print JSON")
    p.set_defaults(func=main)


def main(args) -> int:
    from llf_recipes import engines
    from llf_recipes.engines.env import parse_overrides, resolve
    from llf_recipes.errors import LlfError

    overrides = parse_overrides(args.engine)
    if args.action == "list":
        return _list(overrides, args.json)
    if not args.name:
        raise LlfError(f"engine {args.action} needs an engine name", key="name",
                       fix=f"llf-recipes engine {args.action} NAME; engines: {', '.join(engines.ENGINES)}")
    env = resolve(engines.get(args.name).name, overrides)
    if args.action == "path":
        if not env.installed():
            raise env.missing_error("(any)")
        print(env.python)
        return 0
    if args.action == "install":
        from llf_recipes.engines.install import install

        if env.source not in ("not installed", "installed", "PATH (not installed here)", "this environment"):
            print(f"note: engine {env.name} is pointed at {env.python} ({env.source}); that one is used, not the "
                  "environment installed here", file=sys.stderr)
        source = args.source
        repo = env.engine.source_repo
        if repo and not source:
            checkout = repo.rstrip("/").rsplit("/", 1)[-1]
            raise LlfError(f"engine {env.name} is not on the package registry: name its checkout", key="--source",
                           fix=f"git clone {repo} && llf-recipes engine install {env.name} --source {checkout}")
        install(env.engine, find_links=args.find_links, offline=args.offline, force=args.force, source=source,
                use_uv=not args.no_uv, echo=lambda line: print(line, file=sys.stderr, flush=True))
        return 0
    from llf_recipes.engines.check import check

    lines = check(env)
    if args.json:
        print(json.dumps([{"status": ln.status, "text": ln.text} for ln in lines], indent=2))
    else:
        for ln in lines:
            print(f"{ {'ok': 'ok  ', 'warn': 'warn', 'fail': 'FAIL'}[ln.status]}  {ln.text}")
    failed = sum(ln.status == "fail" for ln in lines)
    print(f"engine {env.name}: " + (f"{failed} problem(s)" if failed else "ready"), file=sys.stderr)
    return 1 if failed else 0


def _list(overrides: dict[str, str], as_json: bool) -> int:
    from llf_recipes import engines
    from llf_recipes.engines.env import resolve

    rows = []
    for name, engine in engines.ENGINES.items():
        env = resolve(name, overrides)
        state = "not installed" if not env.installed() else "on PATH" if env.source.startswith("PATH") else "ready"
        rows.append({"name": name, "state": state, "python": env.python, "source": env.source,
                     "lock": engine.lock, "snapshot": engine.snapshot, "summary": engine.summary})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']:<17} {r['state']:<14} {r['summary']}")
        print(f"{'':<17} {r['python']}  ({r['source']})")
    missing = [r["name"] for r in rows if r["state"] != "ready" and r["lock"] and not engines.get(r["name"]).source_repo]
    if missing:
        print(f"install with: llf-recipes engine install {missing[0]}", file=sys.stderr)
    return 0

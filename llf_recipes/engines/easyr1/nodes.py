"""EasyR1's environment on every node, checked before anything starts: its interpreter imports EasyR1's `verl` (not
upstream verl, not llf-recipes' own environment), and the versions EasyR1 needs hold (omegaconf<2.4, transformers<5,
vllm and flash-attn on GPU nodes, one Ray version on all nodes). All nodes are asked in parallel and every problem is
reported at once. With the engines' model of EasyR1, every requirement of its lock file is checked on every node.
"""

from __future__ import annotations

import json
import subprocess
import threading

from llf_recipes.errors import LlfError

# Run with EasyR1's interpreter on a node: what it has, as one JSON line.
NODE_PROBE = r"""
import importlib.util, json, os, sys
try:
    import importlib.metadata as md
except ImportError:
    md = None
out = {"python": sys.executable, "versions": {}, "verl": "ok"}
for dist in ["verl", "omegaconf", "transformers", "vllm", "flash-attn", "ray", "torch"] + json.loads(sys.argv[1]):
    try:
        out["versions"][dist] = md.version(dist)
    except Exception:
        out["versions"][dist] = None
spec = importlib.util.find_spec("verl")
if spec is None or not spec.origin:
    out["verl"] = "No module named 'verl'"
else:
    root = os.path.dirname(spec.origin)
    if not os.path.exists(os.path.join(root, "trainer", "main.py")) or os.path.exists(os.path.join(root, "trainer", "main_ppo.py")):
        out["verl"] = "%s is upstream verl, not EasyR1's (EasyR1 has verl/trainer/main.py, no main_ppo.py)" % root
    else:
        try:
            import verl  # noqa: F401
        except Exception as e:
            out["verl"] = "import verl failed: %s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
print(json.dumps(out))
"""
PROBE_TIMEOUT_S = 120


def ask_nodes(hosts: list[str], python: str, ssh_config: str | None,
              dists: list[str] = ()) -> dict[int, tuple[dict | None, str]]:
    """Run NODE_PROBE with `python` on every host (locally for a local one), in parallel: rank -> (answer, error)."""
    import os

    from llf_recipes.launchers.ssh import SSH_CONNECT_TIMEOUT_S, forwarded_env, is_local_host, shell_line, ssh_argv

    answers: dict[int, tuple[dict | None, str]] = {}

    def one(rank: int, host: str) -> None:
        argv = [python, "-c", NODE_PROBE, json.dumps(list(dists))]
        if not is_local_host(host):  # with what the run itself gets there: the working directory, forwarded variables
            argv = ssh_argv(host, shell_line(argv, forwarded_env(), os.getcwd()), ssh_config,
                            connect_timeout=SSH_CONNECT_TIMEOUT_S)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
                                  timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            answers[rank] = (None, f"no answer within {PROBE_TIMEOUT_S} s")
            return
        except OSError as exc:
            answers[rank] = (None, f"cannot run {exc.filename or python}")
            return
        try:
            answers[rank] = (json.loads(proc.stdout.strip().splitlines()[-1]), "")
        except (ValueError, IndexError):
            err = proc.stderr.strip().splitlines()
            answers[rank] = (None, f"exit code {proc.returncode}: {err[-1] if err else 'no output'}")

    threads = [threading.Thread(target=one, args=(rank, host)) for rank, host in enumerate(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def _major_minor(version: str) -> tuple[int, int]:
    parts = (version.split(".") + ["0", "0"])[:2]
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except ValueError:
        return 0, 0


def lock_requirements(engine) -> list[tuple[str, str]]:
    """(distribution, specifier) for every requirement of the engine's lock file (names as written there)."""
    from packaging.requirements import InvalidRequirement, Requirement

    path = getattr(engine, "lock_path", None)
    if path is None or not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if not text or text.startswith("-"):
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        out.append((req.name, str(req.specifier)))
    return out


def lock_problems(where: str, versions: dict[str, str | None], requirements: list[tuple[str, str]],
                  gpu_only: tuple[str, ...], gpus: bool, engine_name: str) -> list[str]:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    out = []
    for name, spec in requirements:
        found = versions.get(name)
        if found is None:
            if gpus or name not in gpu_only:
                out.append(f"{where}: {name}{spec} is not installed (the {engine_name} engine's lock needs it)")
            continue
        try:
            ok = not spec or Version(found) in SpecifierSet(spec)
        except InvalidVersion:
            ok = True
        if not ok:
            out.append(f"{where}: {name} {found} does not satisfy {name}{spec} (the {engine_name} engine's lock)")
    return out


def node_problems(hosts: list[str], answers: dict[int, tuple[dict | None, str]], python: str,
                  gpus: bool, engine=None, requirements: list[tuple[str, str]] | None = None) -> list[str]:
    """One line per problem, each naming its node; [] when every node can run EasyR1. With `engine` (the engines'
    model of EasyR1), every requirement of its lock (`requirements`, read from it when not given) is checked on
    every node too."""
    if requirements is None:
        requirements = lock_requirements(engine) if engine is not None else []
    gpu_only = tuple(getattr(engine, "gpu_only", ()) or ())
    problems: list[str] = []
    rays: dict[str, list[str]] = {}
    for rank, host in enumerate(hosts):
        where = f"node {rank} ({host})"
        answer, err = answers.get(rank, (None, "not asked"))
        if answer is None:
            problems.append(f"{where}: cannot run {python} there ({err})")
            continue
        v = answer.get("versions") or {}
        if answer.get("verl") != "ok":
            problems.append(f"{where}: {answer['python']}: {answer.get('verl')}")
        omegaconf, transformers = v.get("omegaconf"), v.get("transformers")
        if omegaconf and _major_minor(omegaconf) >= (2, 4):
            problems.append(f"{where}: omegaconf {omegaconf}; EasyR1 fails on 2.4 at start-up (pin omegaconf<2.4)")
        if transformers and _major_minor(transformers)[0] >= 5:
            problems.append(f"{where}: transformers {transformers}; EasyR1 needs transformers<5")
        for dist in ("vllm", "flash-attn") if gpus else ():
            if not v.get(dist):
                problems.append(f"{where}: {dist} is not installed (EasyR1's rollouts and attention need it)")
        named = {"omegaconf", "transformers", "vllm", "flash-attn", "ray"}  # said above in EasyR1's own words
        problems += lock_problems(where, v, [(n, sp) for n, sp in requirements if n not in named], gpu_only, gpus,
                                  getattr(engine, "name", "easyr1"))
        if not v.get("ray"):
            problems.append(f"{where}: ray is not installed")
        else:
            rays.setdefault(v["ray"], []).append(f"node {rank}")
    if len(rays) > 1:
        problems.append("Ray differs between nodes (a cluster needs one version): "
                        + "; ".join(f"{version} on {', '.join(nodes)}" for version, nodes in sorted(rays.items())))
    return problems


def check_nodes(hosts: list[str], python: str, ssh_config: str | None, gpus: bool, stage: str, engine=None) -> None:
    """Raise one LlfError naming every node whose EasyR1 environment cannot run the stage."""
    requirements = lock_requirements(engine) if engine is not None else []  # read once: asked for, then checked
    answers = ask_nodes(hosts, python, ssh_config, [name for name, _ in requirements])
    problems = node_problems(hosts, answers, python, gpus, engine, requirements)
    if problems:
        raise LlfError(f"stage {stage}: EasyR1's environment ({python}) is not ready on every node; nothing was "
                       "started\n" + "\n".join(f"- {p}" for p in problems),
                       key="easyr1_python",
                       fix="install EasyR1 with its pins (transformers<5, omegaconf<2.4, vllm, flash-attn, one ray "
                           "version) at the same path on every node and point easyr1_python (or $LLF_EASYR1_PYTHON) "
                           "at its interpreter")

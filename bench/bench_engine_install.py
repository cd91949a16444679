"""How long `llf-recipes engine install` takes: cold (an empty uv cache) and warm (the same cache, a new environment).

    python bench/bench_engine_install.py [--engine llamafactory-ppo] [--warm-runs 2] [--out bench/results/engine_install.json]

Each install goes into a fresh temporary LLF_RECIPES_CACHE. The cold round uses an empty UV_CACHE_DIR, so every
wheel is downloaded (and deepspeed built); the warm rounds reuse that uv cache, as CI does with a kept cache. Also
reports the disk the environment adds beyond the uv cache (uv hardlinks from its cache). Needs the package registry.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT


def disk_kib(*paths: Path) -> int:
    """Disk used by `paths` together, hardlinked files counted once (du's rule)."""
    out = subprocess.run(["du", "-sk", "-c", *map(str, paths)], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1].split()[0])


def install(engine: str, cache: Path, uv_cache: Path) -> float:
    env = {**os.environ, "LLF_RECIPES_CACHE": str(cache), "UV_CACHE_DIR": str(uv_cache), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llf_recipes", "engine", "install", engine], env=env,
                          capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"engine install failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="llamafactory-ppo")
    parser.add_argument("--warm-runs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "engine_install.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llf-bench-engine-") as tmp:
        root = Path(tmp)
        uv_cache = root / "uv-cache"
        cold = install(args.engine, root / "cold", uv_cache)
        uv_kib = disk_kib(uv_cache)
        env_kib = disk_kib(uv_cache, root / "cold") - uv_kib
        warm = [install(args.engine, root / f"warm{i}", uv_cache) for i in range(args.warm_runs)]
        result = {"engine": args.engine, "cold_s": round(cold, 1), "warm_s": [round(w, 1) for w in warm],
                  "uv_cache_mib": round(uv_kib / 1024), "environment_beyond_cache_mib": round(env_kib / 1024, 1),
                  "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.engine}: cold {result['cold_s']} s, warm {', '.join(map(str, result['warm_s']))} s; uv cache "
          f"{result['uv_cache_mib']} MiB, each environment {result['environment_beyond_cache_mib']} MiB beyond it")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

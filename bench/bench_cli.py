"""Wall time of the quick verbs against `llamafactory-cli version`, measured in the same run.

    python bench/bench_cli.py [--runs N] [--out bench/results/cli.json]

Targets: `llf-recipes list` <= 0.3 s; `validate --all --all-hostfiles` (every recipe, every layout) <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, program


def timed(argv: list[str], runs: int) -> dict:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return {"argv": argv[1:], "runs": runs, "median_s": round(statistics.median(times), 4),
            "min_s": round(min(times), 4), "max_s": round(max(times), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--lf-runs", type=int, default=3, help="runs of llamafactory-cli version (about 12 s each)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cli.json"))
    args = ap.parse_args()
    llf = program("llf-recipes")
    results = {
        "list": timed([llf, "list"], args.runs),
        "validate_all": timed([llf, "validate", "--all", "--all-hostfiles"], args.runs),
        "llamafactory_version": timed([program("llamafactory-cli"), "version"], args.lf_runs),
    }
    targets = {"list": 0.3, "validate_all": 0.5}
    report = {
        "machine": {"python": platform.python_version(), "cpu_count": __import__("os").cpu_count(), "platform": platform.platform()},
        "results": results,
        "targets_s": targets,
        "met": {k: results[k]["median_s"] <= v for k, v in targets.items()},
    }
    for name, r in results.items():
        target = f"  (target <= {targets[name]} s: {'met' if report['met'][name] else 'MISSED'})" if name in targets else ""
        print(f"{name:<22} median {r['median_s']:.3f} s over {r['runs']} runs{target}")
    lf = results["llamafactory_version"]["median_s"]
    print(f"llf-recipes list is {lf / results['list']['median_s']:.0f}x faster than llamafactory-cli version; "
          f"validating the whole pack {lf / results['validate_all']['median_s']:.0f}x faster")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(report["met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

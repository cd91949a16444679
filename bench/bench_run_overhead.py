"""What `llf-recipes run` adds on top of `llamafactory-cli train`, measured on the same YAML in the same run.

    python bench/bench_run_overhead.py [--runs 3] [--recipe sft-huanhuan] [--out bench/results/run_overhead.json]

Each round runs the recipe's first stage with `llf-recipes run --smoke --force` (render, validate, manifest with
dataset hashes, the stage lock, output streamed to the terminal copy and the log), then `llamafactory-cli train` on
the very YAML that run wrote, in a fresh output directory. Both train the tiny model for the same steps on the same
rows, so the difference is the wrapper's cost. Target: at most 1 s.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, program


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--recipe", default="sft-huanhuan")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "run_overhead.json")
    args = parser.parse_args()

    llf, lf = program("llf-recipes"), program("llamafactory-cli")
    with tempfile.TemporaryDirectory(prefix="llf-bench-") as tmp:
        project = Path(tmp)
        subprocess.run([llf, "prepare", "--recipe", args.recipe, "--sample"], cwd=project, check=True,
                       capture_output=True)
        first = subprocess.run([llf, "show", args.recipe, "--json"], cwd=project, capture_output=True, text=True,
                               check=False)
        stage = json.loads(first.stdout)["stages"][0]["name"] if first.returncode == 0 else None
        run_argv = [llf, "run", args.recipe, "--smoke", "--force"] + (["--stage", stage] if stage else [])
        timed(run_argv, project)  # warm the tiny model cache and the OS file cache
        run_dir = next((project / "saves" / "smoke" / args.recipe).iterdir())
        yaml_path = next(run_dir.glob("llf-*.yaml"))
        plain_yaml = project / "plain.yaml"
        plain_yaml.write_text(yaml_path.read_text().replace(str(run_dir.relative_to(project)), "saves/plain"))
        wrapped, plain = [], []
        for _ in range(args.runs):
            wrapped.append(timed(run_argv, project))
            shutil.rmtree(project / "saves" / "plain", ignore_errors=True)
            plain.append(timed([lf, "train", str(plain_yaml)], project))
    overhead = [w - p for w, p in zip(wrapped, plain)]
    result = {
        "benchmark": "run_overhead",
        "recipe": args.recipe,
        "runs": args.runs,
        "llf_recipes_run_s": [round(t, 3) for t in wrapped],
        "llamafactory_cli_train_s": [round(t, 3) for t in plain],
        "median_overhead_s": round(statistics.median(overhead), 3),
        "target_s": 1.0,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    result["met"] = result["median_overhead_s"] <= result["target_s"]
    print(f"llf-recipes run      : {', '.join(f'{t:.2f}' for t in wrapped)} s")
    print(f"llamafactory-cli     : {', '.join(f'{t:.2f}' for t in plain)} s")
    print(f"median overhead      : {result['median_overhead_s']:.3f} s (target <= 1 s: {'met' if result['met'] else 'MISSED'})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

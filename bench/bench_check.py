"""Wall time, rows per second and peak memory of `llf-recipes check` and `register --file` over generated rows.

    python bench/bench_check.py [--rows 100000] [--repeat 3] [--out bench/results/check.json]

Three files of the same rows: alpaca JSON lines, alpaca as one JSON array, sharegpt (from/value) JSON lines with two
turns. Each command is its own subprocess; peak RSS is that process's own (wait4). Every row is read through the same
model of LLaMA-Factory's converter and stage processor, so the figures are the cost of an exact count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, program

WORDS = ["the", "of", "a", "river", "carries", "silt", "to", "its", "delta", "bees", "dance", "show", "where", "flowers", "are", "granite", "cools", "slowly", "deep"]


def text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def write_inputs(d: Path, rows: int) -> dict[str, Path]:
    """Written a row at a time: this process stays small, so a forked command's peak memory is its own."""
    files = {"alpaca_jsonl": d / "alpaca.jsonl", "alpaca_array": d / "alpaca.json", "sharegpt_jsonl": d / "chats.jsonl"}
    rng = random.Random(0)
    with open(files["alpaca_jsonl"], "w") as lines, open(files["alpaca_array"], "w") as array, \
            open(files["sharegpt_jsonl"], "w") as chats:
        array.write("[\n")
        for i in range(rows):
            row = {"instruction": text(rng, 5, 40), "input": "", "output": text(rng, 10, 120)}
            lines.write(json.dumps(row) + "\n")
            array.write((",\n" if i else "") + json.dumps(row, indent=1))
            turns = [{"from": "human", "value": row["instruction"]}, {"from": "gpt", "value": row["output"]}]
            chats.write(json.dumps({"conversations": turns}) + "\n")
        array.write("\n]\n")
    return files


def timed(argv: list[str]) -> tuple[float, int, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss // 1024, usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "check.json"))
    args = ap.parse_args()
    llf = program("llf-recipes")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, path in write_inputs(d, args.rows).items():
            legs = {"check": [llf, "check", str(path), "--stage", "sft"],
                    "register": [llf, "register", "--file", str(path), "--name", name, "--stage", "sft",
                                 "--data-dir", str(d / "data"), "--dry-run"]}
            for leg, argv in legs.items():
                runs = [timed(argv) for _ in range(args.repeat)]
                wall = statistics.median(r[0] for r in runs)
                results[f"{leg}_{name}"] = {"rows": args.rows, "mb": round(path.stat().st_size / 1e6, 1),
                                            "median_s": round(wall, 3), "rows_per_s": round(args.rows / wall),
                                            "median_cpu_s": round(statistics.median(r[2] for r in runs), 3),
                                            "peak_rss_mb": max(r[1] for r in runs)}
                r = results[f"{leg}_{name}"]
                print(f"{leg:<8} {name:<15} {r['mb']:>7} MB  {r['median_s']:>7.2f} s ({r['median_cpu_s']:.2f} s CPU)  "
                      f"{r['rows_per_s']:>8} rows/s  peak {r['peak_rss_mb']} MB")
    report = {"machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
              "repeat": args.repeat, "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    merged = json.loads(out.read_text()) if out.exists() else {}
    merged[str(args.rows)] = report
    out.write_text(json.dumps(merged, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

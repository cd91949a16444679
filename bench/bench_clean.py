"""Wall time and peak memory of the seed's JSONL cleaning pipeline, three ways, measured in the same run.

    python bench/bench_clean.py [--rows 200000] [--repeat 1] [--out bench/results/clean.json] [--workdir DIR] [--keep]

The pipeline: drop rows with an empty input_text or target_text, rename them to prompt/response, keep rows under
4096 characters, sample 10000 rows. Run as `llf-recipes clean`, as jq piped into shuf, and as a Hugging Face
`datasets` script (with an empty cache each run; llf-recipes after one untimed run that caches its bytecode, as an
installed package has it). `llf-recipes clean` parses only the lines its sample could pick; a fourth leg adds
--stats, which parses and checks every line (same rows out), to show that cost too. Each is its own subprocess, and each peak RSS is that process's alone (GNU time's
figure; see run_pipeline). The input is generated deterministically: random CJK text (U+4E00..U+9FA5), 20-800
characters per field on a log scale (about 260 MB at 200k rows), about 1% empty target_text. Targets: llf-recipes
>= 10x faster than jq + shuf and datasets, peak RSS <= 64 MB; against DuckDB (bench/clean_legs.py, as is the Polars
leg), the sample path >= 1.5x faster and the full-parse path (--stats) at least as fast with at most a fifth of its
peak RSS. A last leg times --near-dedup (MinHash) over the input, or its first --near-dedup-rows rows. Results are merged into the JSON file under the row count, so a 200k
and a 2M run sit side by side.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import orjson
from clean_legs import DUCKDB_SCRIPT, POLARS_SCRIPT

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None  # GNU time: per-command peak RSS
SAMPLE, SEED, MAX_CHARS = 10000, 42, 4096
EVERY_LINE = "llf --stats"
NEAR_DEDUP = "llf --near-dedup"
OWN_LEGS = ("llf-recipes", EVERY_LINE, NEAR_DEDUP)
BYTES_PER_ROW = 1400  # measured on the generated rows; sizes the disk check before anything is written
# Seed 003's four jq commands (drop null/empty, rename, count characters, keep < 4096) fused into one filter, so jq
# parses the rows once instead of four times through intermediate files; shuf -n keeps only its sample in memory
# where the seed's `shuf | head` holds every row. Both changes favour jq + shuf.
JQ_FILTER = ('select(.input_text != null and .input_text != "" and .target_text != null and .target_text != "")'
             ' | {prompt: .input_text, response: .target_text}'
             f' | select(((.prompt | length) + (.response | length)) < {MAX_CHARS})')
DATASETS_SCRIPT = """
import sys
import datasets
from datasets import load_dataset

datasets.disable_progress_bars()
src, dst, n, seed, max_chars = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ds = load_dataset("json", data_files=src, split="train")
ds = ds.filter(lambda b: [p != "" and r != "" for p, r in zip(b["input_text"], b["target_text"])], batched=True)
ds = ds.map(lambda b: {"prompt": b["input_text"], "response": b["target_text"]}, batched=True,
            remove_columns=ds.column_names)
ds = ds.filter(lambda b: [len(p) + len(r) < max_chars for p, r in zip(b["prompt"], b["response"])], batched=True)
ds = ds.shuffle(seed=seed).select(range(min(n, len(ds))))
ds.to_json(dst, force_ascii=False)
"""


def program(name: str) -> str | None:
    beside = BIN / name
    return str(beside) if beside.exists() else shutil.which(name)


def generate(path: Path, rows: int, seed: int = 1234) -> None:
    """Slices of one random pool of CJK characters: deterministic, and fast enough for millions of rows."""
    rng = random.Random(seed)
    cjk = range(0x4E00, 0x9FA6)
    # built in pieces so this process stays small: its size would otherwise show in wait4's peak RSS figures
    pool = "".join("".join(map(chr, rng.choices(cjk, k=1 << 14))) for _ in range(64))
    lo, hi = math.log(20), math.log(800)
    with open(path, "wb", buffering=1 << 20) as fh:
        for i in range(rows):
            texts = []
            for _ in range(2):
                n = int(math.exp(rng.uniform(lo, hi)))
                start = rng.randrange(len(pool) - n)
                texts.append(pool[start:start + n])
            target = "" if rng.random() < 0.01 else texts[1]
            fh.write(orjson.dumps({"id": i, "input_text": texts[0], "target_text": target}, option=orjson.OPT_APPEND_NEWLINE))


def warm(path: Path) -> None:
    """Read the input once so every leg starts with it in the page cache, not only the ones after the first."""
    with open(path, "rb", buffering=0) as fh:
        while fh.read(1 << 24):
            pass


def run_pipeline(argvs: list[list[str]], out: Path, env: dict[str, str | None] | None = None) -> dict:
    """Start argvs as a pipeline (each one's stdout into the next, the last into `out`) and reap each with wait4.

    Peak RSS: the kernel starts an exec'd process's ru_maxrss at the size of the process that exec'd it, so a
    measurement taken with wait4 alone would include this script's own peak. /usr/bin/time forks each command from
    its own small process and reports that command's peak alone; without it, wait4's figure is an upper bound.
    """
    environment = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}  # None: unset it
    procs, errs, rss_files = [], [], []
    start = time.perf_counter()
    with open(out, "wb") as sink, ExitStack() as stack:
        upstream = subprocess.DEVNULL
        for i, argv in enumerate(argvs):
            err = stack.enter_context(tempfile.TemporaryFile())
            last = i == len(argvs) - 1
            rss_file = out.with_name(f"{out.name}.rss{i}")
            rss_files.append(rss_file)
            if TIME:
                argv = [TIME, "-f", "%M %U %S", "-o", str(rss_file), *argv]
            proc = subprocess.Popen(argv, stdin=upstream, stdout=sink if last else subprocess.PIPE, stderr=err,
                                    env=environment)
            if upstream is not subprocess.DEVNULL:
                upstream.close()  # only the next process holds the pipe: the writer gets SIGPIPE if it stops reading
            upstream = proc.stdout
            procs.append(proc)
            errs.append(err)
        results, end = [], start
        for proc, err, rss_file in zip(procs, errs, rss_files):
            _, status, usage = os.wait4(proc.pid, 0)
            end = max(end, time.perf_counter())
            proc.returncode = os.waitstatus_to_exitcode(status)
            if TIME:  # the last line: GNU time writes "Command exited with non-zero status" above it on failure
                peak_kb, user, system = rss_file.read_text().splitlines()[-1].split()
                peak_kb, cpu = int(peak_kb), float(user) + float(system)
            else:
                peak_kb, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
            rss_file.unlink(missing_ok=True)
            err.seek(0)
            results.append({"argv0": Path(proc.args[5 if TIME else 0]).name, "exit": proc.returncode,
                            "peak_rss_mb": round(peak_kb / 1024, 1), "cpu_s": round(cpu, 2),
                            "stderr": err.read()[-2000:].decode(errors="replace")})
    for r in results:
        if r["exit"] != 0:
            raise SystemExit(f"{r['argv0']} failed ({r['exit']}):\n{r['stderr']}")
    with open(out, "rb") as fh:
        rows_out = sum(1 for _ in fh)
    return {"wall_s": round(end - start, 3), "peak_rss_mb": round(sum(r["peak_rss_mb"] for r in results), 1),
            "cpu_s": round(sum(r["cpu_s"] for r in results), 2),
            "processes": [{k: r[k] for k in ("argv0", "peak_rss_mb", "cpu_s")} for r in results], "rows_out": rows_out,
            "rss_from": "/usr/bin/time" if TIME else "wait4 (upper bound)"}


def leg(name: str, argvs: list[list[str]], src: Path, out: Path, repeat: int, env: dict | None = None,
        scratch: Path | None = None) -> dict:
    """Run one way `repeat` times; `scratch` (a cache directory) is emptied before each run so none reuses another's."""
    runs = []
    for _ in range(repeat):
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        warm(src)
        runs.append(run_pipeline(argvs, out, env))
        out.unlink()
    walls, cpus = [r["wall_s"] for r in runs], [r["cpu_s"] for r in runs]
    report = {**runs[-1], "wall_s": round(statistics.median(walls), 3), "walls_s": walls,
              "cpu_s": round(statistics.median(cpus), 2), "cpus_s": cpus,
              "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
              "command": " | ".join(" ".join(map(str, a)) for a in argvs)}
    print(f"  {name:<16} {report['wall_s']:8.3f} s  {report['cpu_s']:7.2f} s CPU  {report['peak_rss_mb']:8.1f} MB  "
          f"{report['rows_out']} rows", flush=True)
    return report


def legs(work: Path, src: Path, repeat: int, near_rows: int | None) -> dict:
    results = {}
    llf = program("llf-recipes") or "llf-recipes"

    def llf_argv(path: Path) -> list[str]:
        return [llf, "clean", str(path), "-o", str(work / "llf.jsonl"), "--drop-empty", "--fields",
                "input_text,target_text", "--rename", "input_text=prompt,target_text=response",
                "--max-chars", str(MAX_CHARS), "--sample", str(SAMPLE), "--seed", str(SEED)]

    # An editable install has no compiled bytecode until a first run writes it, and under PYTHONDONTWRITEBYTECODE
    # every run compiles the package again. Time it as an installed package runs, as datasets does from site-packages:
    # bytecode cached (outside the source tree) by one untimed run on the first 1000 rows.
    env = {"PYTHONPYCACHEPREFIX": str(work / "pycache"), "PYTHONDONTWRITEBYTECODE": None}
    head = work / "warm-up.jsonl"
    with open(src, "rb") as fh, open(head, "wb") as out:
        out.writelines(line for _, line in zip(range(1000), fh))
    run_pipeline([llf_argv(head)], work / "llf.jsonl", env)
    results["llf-recipes"] = leg("llf-recipes", [llf_argv(src)], src, work / "llf.jsonl", repeat, env)
    # --stats parses and checks every line (the plain run parses only the lines its sample could pick): the same rows
    # come out, and this leg shows what checking all of them costs. It is reported, not held to the targets.
    results[EVERY_LINE] = leg(EVERY_LINE, [[*llf_argv(src), "--stats"]], src, work / "llf.jsonl", repeat, env)
    jq, shuf = shutil.which("jq"), shutil.which("shuf")
    if jq and shuf:
        # shuf draws from this file: the same bytes every run, enough of them for any row count
        randomness = work / "shuf-random-source"
        randomness.write_bytes(random.Random(SEED).randbytes(max(1 << 20, src.stat().st_size // 64)))
        results["jq + shuf"] = leg("jq + shuf", [
            [jq, "-c", JQ_FILTER, str(src)], [shuf, "-n", str(SAMPLE), f"--random-source={randomness}"],
        ], src, work / "jq.jsonl", repeat)
    else:
        print("  jq + shuf    skipped: jq or shuf is not installed (apt-get update && apt-get install -y jq)")
    if importlib.util.find_spec("datasets") is None:
        print("  datasets     skipped: the datasets package is not installed (pip install datasets)")
    else:
        cache = work / "hf-cache"  # a fresh cache: every run pays for the Arrow conversion, as a first run does
        env = {"HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        results["datasets"] = leg("datasets", [[
            sys.executable, "-c", DATASETS_SCRIPT, str(src), str(work / "ds.jsonl"), str(SAMPLE), str(SEED), str(MAX_CHARS),
        ]], src, work / "ds.jsonl", repeat, env, scratch=cache)
        shutil.rmtree(cache, ignore_errors=True)
    for name, module, script in (("duckdb", "duckdb", DUCKDB_SCRIPT), ("polars", "polars", POLARS_SCRIPT)):
        if importlib.util.find_spec(module) is None:
            print(f"  {name:<12} skipped: the {module} package is not installed (pip install 'llf-recipes[clean-bench]')")
            continue
        results[name] = leg(name, [[sys.executable, "-c", script, str(src), str(work / f"{name}.jsonl"), str(SAMPLE),
                                    str(SEED), str(MAX_CHARS)]], src, work / f"{name}.jsonl", repeat)
    if near_rows != 0:
        near_src = src
        if near_rows:  # MinHash costs far more per row than parsing: a slice of the input keeps the run short
            near_src = work / "near-input.jsonl"
            with open(src, "rb") as fh, open(near_src, "wb") as out:
                out.writelines(line for _, line in zip(range(near_rows), fh))
        report = leg(NEAR_DEDUP, [[llf, "clean", str(near_src), "-o", str(work / "near.jsonl"), "--near-dedup",
                                   "--fields", "input_text,target_text"]], near_src, work / "near.jsonl", 1, env)
        with open(near_src, "rb") as fh:
            report["rows_in"] = sum(1 for _ in fh)
        report["rows_per_s"] = round(report["rows_in"] / report["wall_s"], 1)
        results[NEAR_DEDUP] = report
    return results


def versions() -> dict:
    found = {"python": platform.python_version(), "orjson": orjson.__version__}
    for package in ("duckdb", "polars", "datasketch"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    for tool in ("jq", "shuf"):
        if shutil.which(tool):
            found[tool] = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    try:
        found["datasets"] = importlib.metadata.version("datasets")
    except importlib.metadata.PackageNotFoundError:
        pass
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each leg; the median wall time is reported")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "clean.json"))
    ap.add_argument("--workdir", help="where the input and outputs go (default: a new temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--near-dedup-rows", type=int, metavar="N",
                    help="rows of the input the --near-dedup leg cleans (default: all; 0 skips the leg)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="llf-bench-clean-"))
    work.mkdir(parents=True, exist_ok=True)
    # the input, the datasets leg's Arrow cache and its filtered/mapped copies
    needed = 3 * args.rows * BYTES_PER_ROW
    free = shutil.disk_usage(work).free
    if free < max(needed, 1 << 30):
        print(f"skipped: {args.rows} rows need about {needed / 1e9:.1f} GB free in {work}, {free / 1e9:.1f} GB are")
        return 0
    src = work / "input.jsonl"
    try:
        start = time.perf_counter()
        generate(src, args.rows)
        size = src.stat().st_size
        print(f"input: {args.rows} rows, {size / 1e6:.0f} MB, generated in {time.perf_counter() - start:.1f} s ({src})")
        load = os.getloadavg()[0]
        results = legs(work, src, args.repeat, args.near_dedup_rows)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report = summarize(args.rows, size, results)
    report["load_average_1min"] = {"before": load, "after": os.getloadavg()[0]}  # other work on the machine
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    runs = {**previous.get("runs", {}), str(args.rows): report}
    out.write_text(json.dumps({"machine": machine(), "versions": versions(), "runs": runs}, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
    return 0


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform()}


def summarize(rows: int, size: int, results: dict) -> dict:
    llf = results["llf-recipes"]
    print(f"\n{'':<16} {'wall s':>8}  {'CPU s':>7}  {'peak RSS MB':>11}  {'llf-recipes is (wall)':>21}  {'(CPU)':>6}")
    speedups, cpu_speedups = {}, {}
    for name, r in results.items():
        ratio, cpu_ratio = r["wall_s"] / llf["wall_s"], r["cpu_s"] / max(llf["cpu_s"], 0.01)
        if name not in OWN_LEGS:
            speedups[name], cpu_speedups[name] = round(ratio, 1), round(cpu_ratio, 1)
        mine = name in ("llf-recipes", NEAR_DEDUP)  # near-dedup does other work: no ratio
        shown = "" if mine else f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"
        cpu_shown = "" if mine else f"{cpu_ratio:.1f}x"
        print(f"{name:<16} {r['wall_s']:8.3f}  {r['cpu_s']:7.2f}  {r['peak_rss_mb']:11.1f}  {shown:>21}  {cpu_shown:>6}")
    targets = {"speedup_vs_each": 10.0, "peak_rss_mb": 64.0, "sample_vs_duckdb": 1.5, "full_parse_vs_duckdb": 1.0,
               "full_parse_rss_share_of_duckdb": 0.2}
    slow = {k: v for k, v in speedups.items() if k in ("jq + shuf", "datasets")}
    met = {"speedup": bool(slow) and all(s >= targets["speedup_vs_each"] for s in slow.values()),
           "peak_rss": llf["peak_rss_mb"] <= targets["peak_rss_mb"]}
    print(f">= 10x faster than {' and '.join(slow) or 'nothing measured'}: {'met' if met['speedup'] else 'MISSED'}; "
          f"peak RSS {llf['peak_rss_mb']} MB <= 64 MB: {'met' if met['peak_rss'] else 'MISSED'}")
    duck, full = results.get("duckdb"), results.get(EVERY_LINE)
    if duck and full:
        met["sample_vs_duckdb"] = duck["wall_s"] / llf["wall_s"] >= targets["sample_vs_duckdb"]
        met["full_parse_vs_duckdb"] = duck["wall_s"] / full["wall_s"] >= targets["full_parse_vs_duckdb"]
        met["full_parse_rss"] = full["peak_rss_mb"] <= targets["full_parse_rss_share_of_duckdb"] * duck["peak_rss_mb"]
        print(f"sample path {duck['wall_s'] / llf['wall_s']:.2f}x DuckDB's speed (>= 1.5x: "
              f"{'met' if met['sample_vs_duckdb'] else 'MISSED'}); full parse {duck['wall_s'] / full['wall_s']:.2f}x "
              f"(>= 1x: {'met' if met['full_parse_vs_duckdb'] else 'MISSED'}), peak RSS {full['peak_rss_mb']} MB vs "
              f"{duck['peak_rss_mb']} MB (<= a fifth: {'met' if met['full_parse_rss'] else 'MISSED'})")
    if NEAR_DEDUP in results:
        near = results[NEAR_DEDUP]
        print(f"--near-dedup: {near['rows_in']} rows in {near['wall_s']:.1f} s ({near['rows_per_s']:.0f} rows/s), "
              f"peak RSS {near['peak_rss_mb']} MB")
    # The targets are on wall time; CPU time (user + system) is less disturbed by other work on the machine.
    return {"rows": rows, "input_mb": round(size / 1e6, 1), "results": results, "speedups": speedups,
            "cpu_speedups": cpu_speedups, "targets": targets, "met": met}


if __name__ == "__main__":
    sys.exit(main())

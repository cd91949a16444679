"""Wall time, CPU time and peak memory of the seed's JSONL cleaning pipeline, seven ways, measured in one run.

    python bench/bench_clean.py [--rows 200000,2000000] [--repeat 3] [--out bench/results/clean.json] [--workdir DIR]

The pipeline: drop rows with an empty input_text or target_text, rename them to prompt/response, keep rows under
4096 characters, sample 10000 rows. The legs: `llf-recipes clean` as it runs by default (the sample path: only the
lines its sample could pick are parsed), the same with --stats (the full-parse path: every line parsed and checked,
the same rows out), DuckDB and Polars (bench/clean_legs.py), jq piped into shuf, a Hugging Face `datasets` script
(an empty cache each run), and `clean --near-dedup` (MinHash) over the input. The input is generated
deterministically: random CJK text (U+4E00..U+9FA5), 20-800 characters per field on a log scale (about 260 MB at 200k
rows), about 1% empty target_text.

The machine may be busy with other work: the legs run in turns (A B C A B C, not A A B B), each `--repeat` times
(the slow jq, datasets and Polars legs `--repeat-slow` times, near-dedup once), the median wall and CPU time are
reported, and the 1-minute load average before each run goes into the JSON. Peak RSS is that of the whole process
tree (a leg's worker processes summed, sampled every 20 ms from /proc) or GNU time's figure for the
command, whichever is larger. Targets: the sample path >= 10x faster than jq + shuf and datasets in <= 64 MB; against
DuckDB the sample path >= 1.5x faster and the full-parse path at least as fast in at most a fifth of its peak RSS.
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
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import orjson
from clean_legs import DUCKDB_SCRIPT, POLARS_SCRIPT

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None  # GNU time: per-command peak RSS
SAMPLE, SEED, MAX_CHARS = 10000, 42, 4096
SAMPLE_PATH, EVERY_LINE, NEAR_DEDUP = "llf sample path", "llf full parse", "llf --near-dedup"
OWN_LEGS = (SAMPLE_PATH, EVERY_LINE, NEAR_DEDUP)
SLOW_LEGS = ("jq + shuf", "datasets", "polars")
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


class TreeRss:
    """The largest sum of VmRSS over a process's descendants, sampled every 20 ms while it runs: a command
    that starts worker processes is counted with all of them at once (GNU time reports one process's peak)."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid, self.interval, self.peak_kb = pid, interval, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    @staticmethod
    def _children(pid: int) -> list[int]:
        found = []
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    found += [int(p) for p in fh.read().split()]
        except OSError:
            pass
        return found

    @staticmethod
    def _rss_kb(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    @staticmethod
    def _cmdline(pid: int) -> bytes:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                return fh.read()
        except OSError:
            return b""

    def _watch(self) -> None:
        while not self._done.is_set():
            todo, total = [(pid, None) for pid in self._children(self.pid)], 0
            while todo:
                pid, parent = todo.pop()
                # A child still running its parent's command line is between its fork and its exec: it shares the
                # parent's pages (vfork, posix_spawn) and adds no memory of its own yet, so it counts once.
                if parent is None or self._cmdline(pid) != self._cmdline(parent):
                    total += self._rss_kb(pid)
                todo += [(child, pid) for child in self._children(pid)]
            self.peak_kb = max(self.peak_kb, total)
            self._done.wait(self.interval)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak_kb


def run_pipeline(argvs: list[list[str]], out: Path, env: dict[str, str | None] | None = None) -> dict:
    """Start argvs as a pipeline (each one's stdout into the next, the last into `out`) and reap each with wait4.

    Peak RSS per command: the larger of GNU time's figure (the kernel starts an exec'd process's ru_maxrss at the
    size of the process that exec'd it, so /usr/bin/time forks each command from its own small process) and the
    sampled sum over the command's process tree (TreeRss: worker processes count together). The pipeline's peak is
    the sum over its commands, which run at the same time.
    """
    environment = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}  # None: unset it
    procs, errs, rss_files, trees = [], [], [], []
    load = os.getloadavg()[0]
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
            trees.append(TreeRss(proc.pid))
            if upstream is not subprocess.DEVNULL:
                upstream.close()  # only the next process holds the pipe: the writer gets SIGPIPE if it stops reading
            upstream = proc.stdout
            procs.append(proc)
            errs.append(err)
        results, end = [], start
        for proc, err, rss_file, tree in zip(procs, errs, rss_files, trees):
            _, status, usage = os.wait4(proc.pid, 0)
            end = max(end, time.perf_counter())
            tree_kb = tree.stop()
            proc.returncode = os.waitstatus_to_exitcode(status)
            if TIME:  # the last line: GNU time writes "Command exited with non-zero status" above it on failure
                peak_kb, user, system = rss_file.read_text().splitlines()[-1].split()
                peak_kb, cpu = int(peak_kb), float(user) + float(system)  # %U %S include reaped worker processes
            else:
                peak_kb, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
            rss_file.unlink(missing_ok=True)
            err.seek(0)
            results.append({"argv0": Path(proc.args[5 if TIME else 0]).name, "exit": proc.returncode,
                            "peak_rss_mb": round(max(peak_kb, tree_kb) / 1024, 1),
                            "tree_rss_mb": round(tree_kb / 1024, 1), "cpu_s": round(cpu, 2),
                            "stderr": err.read()[-2000:].decode(errors="replace")})
    for r in results:
        if r["exit"] != 0:
            raise SystemExit(f"{r['argv0']} failed ({r['exit']}):\n{r['stderr']}")
    with open(out, "rb") as fh:
        rows_out = sum(1 for _ in fh)
    return {"wall_s": round(end - start, 3), "peak_rss_mb": round(sum(r["peak_rss_mb"] for r in results), 1),
            "cpu_s": round(sum(r["cpu_s"] for r in results), 2), "load_1min": round(load, 2),
            "processes": [{k: r[k] for k in ("argv0", "peak_rss_mb", "tree_rss_mb", "cpu_s")} for r in results],
            "rows_out": rows_out, "rss_from": "max(/usr/bin/time, process tree)" if TIME else "wait4, process tree"}


class Leg:
    """One way of running the pipeline: argvs, where it writes, how often it runs, and its runs so far."""

    def __init__(self, name: str, argvs: list[list[str]], out: Path, repeat: int, env: dict | None = None,
                 scratch: Path | None = None):
        self.name, self.argvs, self.out, self.repeat, self.env, self.scratch = name, argvs, out, repeat, env, scratch
        self.runs: list[dict] = []

    def run(self, src: Path) -> None:
        if self.scratch is not None:  # a cache directory, emptied so that no run reuses another's
            shutil.rmtree(self.scratch, ignore_errors=True)
        warm(src)
        self.runs.append(run_pipeline(self.argvs, self.out, self.env))
        self.out.unlink()
        r = self.runs[-1]
        print(f"  {self.name:<16} {r['wall_s']:8.3f} s  {r['cpu_s']:7.2f} s CPU  {r['peak_rss_mb']:8.1f} MB  "
              f"{r['rows_out']} rows  (load {r['load_1min']})", flush=True)

    def report(self) -> dict:
        walls, cpus = [r["wall_s"] for r in self.runs], [r["cpu_s"] for r in self.runs]
        return {**self.runs[-1], "wall_s": round(statistics.median(walls), 3), "walls_s": walls,
                "cpu_s": round(statistics.median(cpus), 2), "cpus_s": cpus,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in self.runs),
                "loads_1min": [r["load_1min"] for r in self.runs],
                "command": " | ".join(" ".join(map(str, a)) for a in self.argvs)}


def make_legs(work: Path, src: Path, repeat: int, repeat_slow: int, near_rows: int | None, only: set[str] | None
              ) -> list[Leg]:
    legs = []
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
    run_pipeline([[*llf_argv(head), "--stats"]], work / "llf.jsonl", env)
    legs.append(Leg(SAMPLE_PATH, [llf_argv(src)], work / "llf.jsonl", repeat, env))
    # --stats parses and checks every line (the plain run parses only the lines its sample could pick): the same rows
    # come out, so this is the full-parse path on the same query
    legs.append(Leg(EVERY_LINE, [[*llf_argv(src), "--stats"]], work / "llf.jsonl", repeat, env))
    for name, module, script in (("duckdb", "duckdb", DUCKDB_SCRIPT), ("polars", "polars", POLARS_SCRIPT)):
        if importlib.util.find_spec(module) is None:
            print(f"  {name:<12} skipped: the {module} package is not installed (pip install 'llf-recipes[clean-bench]')")
            continue
        legs.append(Leg(name, [[sys.executable, "-c", script, str(src), str(work / f"{name}.jsonl"), str(SAMPLE),
                                str(SEED), str(MAX_CHARS)]], work / f"{name}.jsonl",
                        repeat_slow if name in SLOW_LEGS else repeat))
    jq, shuf = shutil.which("jq"), shutil.which("shuf")
    if jq and shuf:
        # shuf draws from this file: the same bytes every run, enough of them for any row count
        randomness = work / "shuf-random-source"
        randomness.write_bytes(random.Random(SEED).randbytes(max(1 << 20, src.stat().st_size // 64)))
        legs.append(Leg("jq + shuf", [[jq, "-c", JQ_FILTER, str(src)],
                                      [shuf, "-n", str(SAMPLE), f"--random-source={randomness}"]],
                        work / "jq.jsonl", repeat_slow))
    else:
        print("  jq + shuf    skipped: jq or shuf is not installed (apt-get update && apt-get install -y jq)")
    if importlib.util.find_spec("datasets") is None:
        print("  datasets     skipped: the datasets package is not installed (pip install datasets)")
    else:
        cache = work / "hf-cache"  # a fresh cache: every run pays for the Arrow conversion, as a first run does
        ds_env = {"HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        legs.append(Leg("datasets", [[sys.executable, "-c", DATASETS_SCRIPT, str(src), str(work / "ds.jsonl"),
                                      str(SAMPLE), str(SEED), str(MAX_CHARS)]], work / "ds.jsonl", repeat_slow, ds_env,
                        scratch=cache))
    if near_rows != 0:
        near_src = src
        if near_rows:  # MinHash costs far more per row than parsing: a slice of the input keeps the run short
            near_src = work / "near-input.jsonl"
            with open(src, "rb") as fh, open(near_src, "wb") as out:
                out.writelines(line for _, line in zip(range(near_rows), fh))
        leg = Leg(NEAR_DEDUP, [[llf, "clean", str(near_src), "-o", str(work / "near.jsonl"), "--near-dedup", "--fields",
                                "input_text,target_text"]], work / "near.jsonl", 1, env)
        leg.src = near_src
        legs.append(leg)
    return [leg for leg in legs if only is None or leg.name in only]


def run_legs(legs: list[Leg], src: Path) -> dict:
    """In turns: every leg once, then every leg with runs left once more, and so on."""
    for turn in range(max((leg.repeat for leg in legs), default=0)):
        for leg in legs:
            if turn < leg.repeat:
                leg.run(getattr(leg, "src", src))
    results = {leg.name: leg.report() for leg in legs}
    for leg in legs:
        if leg.name == NEAR_DEDUP:
            with open(leg.src, "rb") as fh:
                results[NEAR_DEDUP]["rows_in"] = sum(1 for _ in fh)
            results[NEAR_DEDUP]["rows_per_s"] = round(results[NEAR_DEDUP]["rows_in"] / results[NEAR_DEDUP]["wall_s"], 1)
    return results


def versions() -> dict:
    found = {"python": platform.python_version(), "orjson": orjson.__version__}
    for package in ("duckdb", "polars", "datasketch", "datasets"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    for tool in ("jq", "shuf"):
        if shutil.which(tool):
            found[tool] = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="200000,2000000", help="input sizes, comma-separated (default: 200000,2000000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the llf-recipes and DuckDB legs (default: 3)")
    ap.add_argument("--repeat-slow", type=int, default=1, help="runs of the jq, datasets and Polars legs (default: 1)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "clean.json"))
    ap.add_argument("--workdir", help="where the inputs and outputs go (default: a new temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--near-dedup-rows", type=int, metavar="N",
                    help="rows of the input the --near-dedup leg cleans (default: all; 0 skips the leg)")
    ap.add_argument("--legs", help="only these legs, comma-separated (e.g. 'llf full parse,duckdb')")
    args = ap.parse_args()
    sizes = [int(n) for n in args.rows.split(",")]
    only = set(args.legs.split(",")) if args.legs else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    for rows in sizes:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="llf-bench-clean-")) / f"rows-{rows}"
        work.mkdir(parents=True, exist_ok=True)
        needed = 3 * rows * BYTES_PER_ROW  # the input, the datasets leg's Arrow cache and its filtered/mapped copies
        free = shutil.disk_usage(work).free
        if free < max(needed, 1 << 30):
            print(f"skipped: {rows} rows need about {needed / 1e9:.1f} GB free in {work}, {free / 1e9:.1f} GB are")
            continue
        src = work / "input.jsonl"
        try:
            start = time.perf_counter()
            generate(src, rows)
            size = src.stat().st_size
            print(f"input: {rows} rows, {size / 1e6:.0f} MB, generated in {time.perf_counter() - start:.1f} s ({src})")
            legs = make_legs(work, src, args.repeat, args.repeat_slow, args.near_dedup_rows, only)
            results = run_legs(legs, src)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        report = summarize(rows, size, results)
        loads = [load for r in results.values() for load in r["loads_1min"]]
        report["load_average_1min"] = {"min": min(loads), "median": statistics.median(loads), "max": max(loads)}
        previous = json.loads(out.read_text()) if out.exists() else {}
        runs = {**previous.get("runs", {}), str(rows): report}
        out.write_text(json.dumps({"machine": machine(), "versions": versions(), "runs": runs}, indent=2,
                                  ensure_ascii=False) + "\n")
        print(f"wrote {out} (1-minute load average during the runs: {min(loads)} to {max(loads)})")
    print(f"benchmark took {time.perf_counter() - began:.0f} s")
    return 0


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform()}


def summarize(rows: int, size: int, results: dict) -> dict:
    llf = results.get(SAMPLE_PATH)
    print(f"\n{rows} rows: {'':<6} {'wall s':>8}  {'CPU s':>7}  {'peak RSS MB':>11}  {'sample path is (wall)':>21}  "
          f"{'(CPU)':>6}")
    speedups, cpu_speedups = {}, {}
    for name, r in results.items():
        mine = name in (SAMPLE_PATH, NEAR_DEDUP) or llf is None  # near-dedup does other work: no ratio
        ratio = r["wall_s"] / llf["wall_s"] if llf else 0
        cpu_ratio = r["cpu_s"] / max(llf["cpu_s"], 0.01) if llf else 0
        if not mine and name not in OWN_LEGS:
            speedups[name], cpu_speedups[name] = round(ratio, 2), round(cpu_ratio, 2)
        shown = "" if mine else f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"
        cpu_shown = "" if mine else f"{cpu_ratio:.1f}x"
        print(f"{name:<16} {r['wall_s']:8.3f}  {r['cpu_s']:7.2f}  {r['peak_rss_mb']:11.1f}  {shown:>21}  {cpu_shown:>6}")
    targets = {"speedup_vs_each": 10.0, "peak_rss_mb": 64.0, "sample_vs_duckdb": 1.5, "full_parse_vs_duckdb": 1.0,
               "full_parse_rss_share_of_duckdb": 0.2}
    met = {}
    slow = {k: v for k, v in speedups.items() if k in ("jq + shuf", "datasets")}
    if llf:
        met["speedup"] = bool(slow) and all(s >= targets["speedup_vs_each"] for s in slow.values())
        met["peak_rss"] = llf["peak_rss_mb"] <= targets["peak_rss_mb"]
        print(f">= 10x faster than {' and '.join(slow) or 'nothing measured'}: {'met' if met['speedup'] else 'MISSED'}; "
              f"peak RSS {llf['peak_rss_mb']} MB <= 64 MB: {'met' if met['peak_rss'] else 'MISSED'}")
    duck, full = results.get("duckdb"), results.get(EVERY_LINE)
    vs_duckdb = {}
    if duck and llf:
        vs_duckdb["sample_wall"] = round(duck["wall_s"] / llf["wall_s"], 2)
        vs_duckdb["sample_cpu"] = round(duck["cpu_s"] / max(llf["cpu_s"], 0.01), 2)
        met["sample_vs_duckdb"] = vs_duckdb["sample_wall"] >= targets["sample_vs_duckdb"]
        print(f"sample path: {vs_duckdb['sample_wall']:.2f}x DuckDB's speed by wall time (>= 1.5x: "
              f"{'met' if met['sample_vs_duckdb'] else 'MISSED'}), {vs_duckdb['sample_cpu']:.2f}x by CPU time")
    if duck and full:
        vs_duckdb["full_parse_wall"] = round(duck["wall_s"] / full["wall_s"], 2)
        vs_duckdb["full_parse_cpu"] = round(duck["cpu_s"] / max(full["cpu_s"], 0.01), 2)
        vs_duckdb["full_parse_rss_share"] = round(full["peak_rss_mb"] / duck["peak_rss_mb"], 3)
        met["full_parse_vs_duckdb"] = vs_duckdb["full_parse_wall"] >= targets["full_parse_vs_duckdb"]
        met["full_parse_rss"] = vs_duckdb["full_parse_rss_share"] <= targets["full_parse_rss_share_of_duckdb"]
        print(f"full-parse path: {vs_duckdb['full_parse_wall']:.2f}x DuckDB's speed by wall time (>= 1x: "
              f"{'met' if met['full_parse_vs_duckdb'] else 'MISSED'}), {vs_duckdb['full_parse_cpu']:.2f}x by CPU time; "
              f"peak RSS {full['peak_rss_mb']} MB vs {duck['peak_rss_mb']} MB (<= a fifth: "
              f"{'met' if met['full_parse_rss'] else 'MISSED'})")
    if NEAR_DEDUP in results:
        near = results[NEAR_DEDUP]
        print(f"--near-dedup: {near['rows_in']} rows in {near['wall_s']:.1f} s ({near['rows_per_s']:.0f} rows/s), "
              f"peak RSS {near['peak_rss_mb']} MB")
    # The targets are on wall time; CPU time (user + system) is less disturbed by other work on the machine.
    return {"rows": rows, "input_mb": round(size / 1e6, 1), "results": results, "speedups": speedups,
            "cpu_speedups": cpu_speedups, "vs_duckdb": vs_duckdb, "targets": targets, "met": met}


if __name__ == "__main__":
    sys.exit(main())

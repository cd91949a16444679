"""Where the CPU time of `clean`'s full-parse path goes, part by part, against DuckDB's whole query.

    python bench/bench_clean_profile.py [--rows 2000000] [--repeat 3] [--input FILE] [--out bench/results/clean_profile.json]

On the input bench_clean.py generates (CJK text, 20-800 characters per field), read in the chunks the full-parse path
reads (clean_parallel.CHUNK_BYTES), it times on one core, best of --repeat, in CPU seconds for the whole input:
  read          pread of every chunk (the page cache copied into the process)
  split         a chunk cut into its lines
  orjson        orjson.loads of every line (a dict and its strings: what the checks need)
  utf8 decode   bytes.decode of every line: CPython's UTF-8 decoder alone, no JSON at all
  scan          clean_lines.scan of every chunk, as a worker runs it (split, parse and every check of the run below)
  xxh3, blake2b the --dedup digest of every row (orjson.dumps with sorted keys, then the hash)
and, when the packages are installed, the decoders measured against orjson: msgspec with the text fields as str,
msgspec with them left raw (no UTF-8 check), and pysimdjson (validation only). DuckDB's query (bench/clean_legs.py) is
run as a child and its user + system CPU time taken from the kernel. The checks' own cost is scan - split - orjson.
It prints a table and writes JSON; the run is the "why" behind the README's full-parse figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from hashlib import blake2b
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import orjson
from bench_clean import MAX_CHARS, SAMPLE, SEED, generate, machine, versions
from clean_legs import DUCKDB_SCRIPT

from llf_recipes.data.clean_lines import line_checker, scan
from llf_recipes.data.clean_parallel import CHUNK_BYTES

ROOT = Path(__file__).resolve().parent.parent

FIELDS = ("input_text", "target_text")


def chunks(path: Path):
    """The file in whole-line chunks of about CHUNK_BYTES, as bytes."""
    with open(path, "rb", buffering=0) as fh:
        fd, size, lo = fh.fileno(), os.fstat(fh.fileno()).st_size, 0
        while lo < size:
            data = os.pread(fd, CHUNK_BYTES + (1 << 16), lo)
            cut = data.find(b"\n", CHUNK_BYTES - 1)
            data = data[:cut + 1] if cut >= 0 else data
            if cut < 0 and lo + len(data) < size:  # a line longer than the read: take the rest of it
                data += os.pread(fd, size, lo + len(data)).split(b"\n", 1)[0] + b"\n"
            yield data
            lo += len(data)


def cpu(work, path: Path, repeat: int) -> float:
    """The least CPU time of `repeat` runs of work(chunk) over every chunk (the reads included)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for data in chunks(path):
            work(data)
        best = min(best, time.process_time() - start)
    return best


def parts(path: Path) -> dict:
    """name -> (what it measures, a function of one chunk)."""
    opts = SimpleNamespace(fields=FIELDS, rename={"input_text": "prompt", "target_text": "response"}, group_by=None,
                           val_ratio=None, seed=0, dedup=False, dedup_on=(), drop_empty=True, max_chars=MAX_CHARS,
                           max_tokens=None, stats=True)
    check = line_checker(opts)
    loads, dumps, sort_keys = orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS
    out = {
        "read": ("pread of every chunk", lambda data: None),
        "split": ("the chunks cut into lines", lambda data: BytesIO(data).readlines()),
        "orjson": ("split + orjson.loads per line", lambda data: list(map(loads, BytesIO(data).readlines()))),
        "utf8 decode": ("split + bytes.decode per line (no JSON)",
                        lambda data: list(map(bytes.decode, BytesIO(data).readlines()))),
        "scan": ("clean_lines.scan per chunk, sample mode (what --stats runs)",
                 lambda data: scan(data, check, None, None, True)),
        "blake2b": ("split + orjson + dumps(sorted) + BLAKE2b-128 per row", lambda data: [
            blake2b(dumps(row, option=sort_keys), digest_size=16).digest()
            for row in map(loads, BytesIO(data).readlines())]),
    }
    if importlib.util.find_spec("xxhash"):
        from xxhash import xxh3_128_digest

        out["xxh3"] = ("split + orjson + dumps(sorted) + XXH3-128 per row", lambda data: [
            xxh3_128_digest(dumps(row, option=sort_keys)) for row in map(loads, BytesIO(data).readlines())])
    if importlib.util.find_spec("msgspec"):
        import msgspec

        as_str = msgspec.defstruct("Row", [(name, str) for name in FIELDS])
        as_raw = msgspec.defstruct("RawRow", [(name, msgspec.Raw) for name in FIELDS])
        for name, kind in (("msgspec str", as_str), ("msgspec raw", as_raw)):
            decode = msgspec.json.Decoder(kind).decode
            out[name] = (f"split + {name} per line", lambda data, decode=decode: list(map(
                decode, BytesIO(data).readlines())))
    if importlib.util.find_spec("simdjson"):
        import simdjson

        parser = simdjson.Parser()

        def validate(data: bytes) -> None:
            for line in BytesIO(data).readlines():
                doc = parser.parse(line)
                del doc  # the parser is reused only when no document holds it

        out["pysimdjson"] = ("split + pysimdjson parse per line (validation, no Python strings)", validate)
    return out


def duckdb_cpu(src: Path, repeat: int) -> dict | None:
    if importlib.util.find_spec("duckdb") is None:
        return None
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", DUCKDB_SCRIPT, str(src), f"{tmp}/out.jsonl", str(SAMPLE),
                                   str(SEED), str(MAX_CHARS)], capture_output=True, text=True, check=False)
            if done.returncode:  # its progress bar goes to stderr: shown only when the query fails
                raise SystemExit(f"the DuckDB query failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            runs.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall))
    cpu_s, wall_s = min(runs)
    return {"cpu_s": round(cpu_s, 3), "wall_s": round(wall_s, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000, help="rows of the generated input (default 2000000)")
    ap.add_argument("--input", type=Path, help="a JSONL file of bench_clean.py's layout instead of generating one")
    ap.add_argument("--repeat", type=int, default=3, help="runs per part; the least CPU time counts (default 3)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "clean_profile.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="llf-bench-profile-") as tmp:
        src = args.input
        if src is None:
            src = Path(tmp) / "input.jsonl"
            generate(src, args.rows)
        size = src.stat().st_size
        rows = sum(data.count(b"\n") for data in chunks(src))
        print(f"input: {rows} rows, {size / 1e6:.0f} MB; CPU seconds for the whole input, best of {args.repeat}, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        figures = {}
        for name, (what, work) in parts(src).items():
            seconds = cpu(work, src, args.repeat)
            figures[name] = {"cpu_s": round(seconds, 3), "mb_per_s": round(size / 1e6 / seconds), "what": what}
            print(f"  {name:<12} {seconds:7.2f} s  {size / 1e6 / seconds:6.0f} MB/s  {what}", flush=True)
        duck = duckdb_cpu(src, args.repeat)
    if duck:
        print(f"  {'duckdb':<12} {duck['cpu_s']:7.2f} s  (wall {duck['wall_s']:.2f} s)  the whole query, a child process")
    read = figures["read"]["cpu_s"]
    derived = {
        "checks_s": round(figures["scan"]["cpu_s"] - figures["orjson"]["cpu_s"], 3),
        "orjson_only_s": round(figures["orjson"]["cpu_s"] - figures["split"]["cpu_s"], 3),
        "utf8_decode_only_s": round(figures["utf8 decode"]["cpu_s"] - figures["split"]["cpu_s"], 3),
        "split_only_s": round(figures["split"]["cpu_s"] - read, 3),
        "scan_on_two_cores_s": round(figures["scan"]["cpu_s"] / 2, 3),
    }
    print(f"checks (scan - orjson): {derived['checks_s']:.2f} s; orjson.loads alone {derived['orjson_only_s']:.2f} s; "
          f"CPython's UTF-8 decoder alone {derived['utf8_decode_only_s']:.2f} s; "
          f"scan split evenly over two cores {derived['scan_on_two_cores_s']:.2f} s"
          + (f" against DuckDB's {duck['wall_s']:.2f} s wall" if duck else ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "input_mb": round(size / 1e6, 1), "repeat": args.repeat,
                                    "load_1min": round(os.getloadavg()[0], 2), "parts": figures, "derived": derived,
                                    "duckdb": duck, "machine": machine(), "versions": versions()}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`--backend vllm` against LLaMA-Factory's Hugging Face engine on one GPU: batch generation, greedy agreement, and
the latency of `serve`.

    python bench/bench_gpu_vllm.py [--prompts 64] [--requests 32] [--out bench/results/gpu_vllm.json]

The model is a randomly initialised Qwen2.5-0.5B (built from its config as bench_gpu_sft.py does; no hub download),
the prompts are the bundled huanhuan sample's. Legs, each through the llf-recipes CLI in its own process:
  1. `generate` greedy over the same prompts with `--backend hf` and `--backend vllm`: wall time, prompts per second,
     and the share of prompts whose two greedy answers are the same text;
  2. `ask --backend vllm`: one answer through LLaMA-Factory's ChatModel on its vLLM engine;
  3. `serve --backend vllm`: chat completions one after another, P50 and P95 latency (the deployment check of the
     self-play tutorial).
Without a CUDA GPU or without vllm it says which, writes {"ran": false, "reason": ...} and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from _common import ROOT

sys.path.insert(0, str(ROOT))


def cli(*argv: str, timeout: int = 1800) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llf_recipes", *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)
    return time.perf_counter() - start, proc


def generate_leg(run: Path, data: Path, out: Path, backend: str, prompts: int) -> dict:
    wall, proc = cli("generate", run, "--dataset", "huanhuan", "--data-dir", data, "-o", out, "--temperature", "0",
                     "--max-new-tokens", "64", "--limit", prompts, "--backend", backend, "--no-progress")
    if proc.returncode != 0:
        return {"error": proc.stderr[-1500:]}
    return {"wall_s": round(wall, 2), "prompts_per_s": round(prompts / wall, 3)}


def answers(path: Path) -> dict[int, str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {r["index"]: r["answers"][0] for r in rows}


def serve_leg(run: Path, requests: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llf_recipes", "serve", str(run), "--port", str(port), "--backend",
                             "vllm", "--model-name", "bench", "--temperature", "0", "--max-new-tokens", "64"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 900
        while True:
            if proc.poll() is not None:
                return {"error": f"serve exited with {proc.returncode} (log: {run / 'llf-serve.log'})"}
            if time.time() > deadline:
                return {"error": "serve did not come up in 900 s"}
            try:
                urllib.request.urlopen(f"{base}/models", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        latencies = []
        for i in range(requests):
            body = {"model": "bench", "messages": [{"role": "user", "content": f"Tell me about day {i} in the palace."}]}
            req = urllib.request.Request(f"{base}/chat/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
            start = time.perf_counter()
            json.loads(urllib.request.urlopen(req, timeout=300).read())
            latencies.append(time.perf_counter() - start)
        cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
        return {"requests": requests, "p50_s": round(statistics.median(latencies), 4), "p95_s": round(cuts[94], 4)}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_vllm.json")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    import torch

    reason = ("no CUDA GPU here" if not torch.cuda.is_available()
              else "vllm is not installed (pip install 'llf-recipes[vllm]')" if importlib.util.find_spec("vllm") is None
              else None)
    if reason:
        print(f"{reason}: the vLLM benchmark was not run")
        args.out.write_text(json.dumps({"benchmark": "gpu_vllm", "ran": False, "reason": reason}, indent=2) + "\n")
        return 0

    from bench_gpu_sft import build_model

    from llf_recipes import manifest

    with tempfile.TemporaryDirectory(prefix="llf-vllm-bench-") as tmp:
        tmp = Path(tmp)
        model = build_model(tmp / "qwen2.5-0.5b-random")
        run = tmp / "run"
        run.mkdir()
        manifest.write(run, {"status": "completed", "recipe": {"name": "bench"}, "stage": "model",
                             "model": {"base": str(model), "adapters": [], "template": "qwen"}})
        data = tmp / "data"
        subprocess.run([sys.executable, "-m", "llf_recipes", "prepare", "huanhuan", "--sample-data", "--data-dir",
                        str(data)], cwd=ROOT, check=True, capture_output=True)
        results: dict = {}
        for backend in ("hf", "vllm"):
            results[f"generate {backend}"] = generate_leg(run, data, tmp / f"{backend}.jsonl", backend, args.prompts)
            print(f"generate --backend {backend}: {results[f'generate {backend}']}", flush=True)
        if all("error" not in results[f"generate {b}"] for b in ("hf", "vllm")):
            hf, vllm = answers(tmp / "hf.jsonl"), answers(tmp / "vllm.jsonl")
            results["greedy agreement"] = round(sum(hf[i] == vllm.get(i) for i in hf) / len(hf), 3)
            print(f"greedy answers equal on {results['greedy agreement']:.0%} of prompts", flush=True)
        wall, proc = cli("ask", run, "What is your name?", "--backend", "vllm", "--temperature", "0",
                         "--max-new-tokens", "32")
        results["ask vllm"] = ({"wall_s": round(wall, 2), "answered": bool(proc.stdout.strip())} if proc.returncode == 0
                               else {"error": proc.stderr[-1500:]})
        print(f"ask --backend vllm: {results['ask vllm']}", flush=True)
        results["serve vllm"] = serve_leg(run, args.requests)
        print(f"serve --backend vllm: {results['serve vllm']}", flush=True)
    import vllm

    result = {"benchmark": "gpu_vllm", "ran": True, "gpu": torch.cuda.get_device_name(0), "vllm": vllm.__version__,
              "prompts": args.prompts, "results": results, "date": time.strftime("%Y-%m-%d")}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

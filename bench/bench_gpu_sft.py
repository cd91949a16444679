"""GPU throughput and memory: `sft-huanhuan` as llf-recipes renders it for one GPU, against the seed tutorial's command.

    python bench/bench_gpu_sft.py [--steps 30] [--out bench/results/gpu_sft.json]

Both configs train a randomly initialised model with Qwen2.5-0.5B's architecture (no hub download: it is built from
its config) on the bundled huanhuan sample for the same fixed number of steps, each in its own process, through
LLaMA-Factory's own training entry. Reported per config: effective tokens/s (LLaMA-Factory's
`effective_tokens_per_sec`), wall time, and peak GPU memory (torch.cuda.max_memory_allocated).

The seed's command: QLoRA (4-bit nf4, double quantization), LoRA r8/alpha16/dropout 0.05 on q_proj,v_proj, fp16,
cutoff 4096, batch 4 x accumulation 4, lr 1e-4. The recipe: the same QLoRA settings on all linear layers, bf16,
cutoff 2048, global batch 16 split for one GPU.

Without a CUDA GPU it says so, writes {"ran": false} and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Qwen2.5-0.5B-Instruct's published architecture.
QWEN25_05B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
              "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}

SEED_COMMAND = {
    "stage": "sft", "do_train": True, "template": "qwen", "finetuning_type": "lora", "overwrite_cache": True,
    "overwrite_output_dir": True, "cutoff_len": 4096, "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 4, "learning_rate": 1e-4, "num_train_epochs": 3.0, "plot_loss": False, "fp16": True,
    "quantization_bit": 4, "double_quantization": True, "quantization_type": "nf4",
    "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.05, "lora_target": "q_proj,v_proj",
}


def build_model(dest: Path) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from llf_recipes.smoke import tiny_model_path

    tiny = tiny_model_path()
    config = Qwen2Config(**QWEN25_05B, bos_token_id=None, eos_token_id=2, pad_token_id=0, torch_dtype="bfloat16")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(dest, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (tiny / name).is_file():
            (dest / name).write_bytes((tiny / name).read_bytes())
    return dest


def child(config_path: str) -> int:
    """Train one config in this process and print its figures as JSON on the last line."""
    import torch
    from llamafactory.train.tuner import run_exp

    config = json.loads(Path(config_path).read_text())
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run_exp(config)
    wall = time.perf_counter() - start
    results = json.loads((Path(config["output_dir"]) / "all_results.json").read_text())
    print(json.dumps({
        "wall_s": round(wall, 2),
        "train_runtime_s": results.get("train_runtime"),
        "effective_tokens_per_sec": results.get("effective_tokens_per_sec"),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
        "train_loss": results.get("train_loss"),
    }))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_sft.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)

    import torch

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        print("no CUDA GPU here: the GPU benchmark was not run")
        args.out.write_text(json.dumps({"benchmark": "gpu_sft", "ran": False, "reason": "no CUDA GPU"}, indent=2) + "\n")
        return 0

    from llf_recipes.catalog import Catalog
    from llf_recipes.hardware import parse_gpus
    from llf_recipes.render import Overrides, Renderer

    catalog = Catalog.discover(project_dir=ROOT)
    with tempfile.TemporaryDirectory(prefix="llf-gpu-bench-") as tmp:
        tmp = Path(tmp)
        model = build_model(tmp / "qwen2.5-0.5b-random")
        data = tmp / "data"
        subprocess.run([sys.executable, "-m", "llf_recipes", "prepare", "huanhuan", "--sample", "--data-dir", str(data)],
                       check=True, capture_output=True)
        common = {"model_name_or_path": str(model), "dataset": "huanhuan", "dataset_dir": str(data),
                  "max_steps": args.steps, "save_strategy": "no", "logging_steps": 5, "report_to": "none",
                  "include_effective_tokens_per_second": True, "preprocessing_num_workers": 1}
        recipe = catalog.recipe("sft-huanhuan")
        rendered = Renderer(recipe, parse_gpus("0"), Overrides.parse([], recipe), catalog).render("sft")
        configs = {
            "llf-recipes sft-huanhuan (1 GPU)": {**rendered.config, **common, "output_dir": str(tmp / "recipe"),
                                                 "plot_loss": False},
            "seed 000 command": {**SEED_COMMAND, **common, "output_dir": str(tmp / "seed")},
        }
        results = {}
        for name, config in configs.items():
            path = tmp / f"{len(results)}.json"
            path.write_text(json.dumps(config))
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")}
            proc = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True,
                                  env=env, check=False)
            if proc.returncode != 0:
                results[name] = {"error": proc.stderr[-1500:]}
            else:
                results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{name}: {results[name]}")
    result = {"benchmark": "gpu_sft", "ran": True, "steps": args.steps, "gpu": torch.cuda.get_device_name(0),
              "results": results, "date": time.strftime("%Y-%m-%d")}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

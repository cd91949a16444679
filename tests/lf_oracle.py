"""LLaMA-Factory's own verdict on configs: its get_train_args / get_infer_args, run in a process of their own.

    python tests/lf_oracle.py JOBS.json RESULTS.json

JOBS.json is a list of {"path", "verb" (train|chat|export), "cwd"}. RESULTS.json gets, per path, {"ok": true,
"ds_mismatches": [...]} or {"ok": false, "error": "..."}. The configs target GPU machines and this one may have
none, so the hardware probes answer as a bf16 GPU would; a distributed launch is simulated by the caller's
environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT: one torchrun process), which is how
LLaMA-Factory's CLI starts DeepSpeed training.
"""

from __future__ import annotations

import json
import os
import sys


def main(jobs_path: str, out_path: str) -> int:
    jobs_path, out_path = os.path.abspath(jobs_path), os.path.abspath(out_path)  # each job changes directory
    import transformers.training_args as targs
    from llamafactory.hparams import parser as lf_parser
    from omegaconf import OmegaConf
    from transformers.integrations import deepspeed as hf_deepspeed

    targs.is_torch_bf16_gpu_available = lambda: True
    lf_parser.is_torch_bf16_gpu_available = lambda: True
    results = {}
    with open(jobs_path, encoding="utf-8") as fh:
        jobs = json.load(fh)
    for job in jobs:
        os.chdir(job["cwd"])
        try:
            config = OmegaConf.to_container(OmegaConf.load(job["path"]))
            if job["verb"] == "train":
                training_args = lf_parser.get_train_args(config)[2]
                ds_config = getattr(training_args, "hf_deepspeed_config", None)
                results[job["path"]] = {"ok": True, "ds_mismatches": list(getattr(ds_config, "mismatches", []) or [])}
            else:
                lf_parser.get_infer_args(config)
                results[job["path"]] = {"ok": True, "ds_mismatches": []}
        except BaseException as exc:  # noqa: BLE001 - any refusal is the verdict (argparse-style SystemExit too)
            results[job["path"]] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:800]}
        finally:
            hf_deepspeed.unset_hf_deepspeed_config()
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

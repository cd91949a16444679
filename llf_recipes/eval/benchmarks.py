"""Standard benchmarks through EleutherAI's lm-evaluation-harness (`lm-eval`, the `bench` extra).

A run is loaded as lm-eval's HF model with `peft=` its adapter (a chain of adapters: all but the last merged into a
temporary model first, as `eval` loads it), or through lm-eval's vLLM model on a GPU when vLLM is installed. The
scores are lm-eval's own `results` for each task, kept with the task's version, n-shot and the row cap.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError
from llf_recipes.eval.runs import Run
from llf_recipes.suggest import nearest

OFFLINE_FIX = ("download it once where the hub is reachable (it is cached under HF_DATASETS_CACHE), then point "
               "HF_DATASETS_CACHE at that cache here, or set HF_ENDPOINT to a reachable mirror; your own task files "
               "go in --include-path DIR")


@dataclass
class BenchOptions:
    tasks: list[str]
    include_path: str | None = None
    limit: int | None = None
    num_fewshot: int | None = None
    batch_size: int = 8
    device: str = "auto"
    backend: str = "auto"  # auto | hf | vllm
    apply_chat_template: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def require_lm_eval() -> str:
    try:
        import lm_eval
    except ImportError:
        raise LlfError("bench needs lm-evaluation-harness", fix='pip install "llf-recipes[bench]"') from None
    return getattr(lm_eval, "__version__", "?")


def go_offline_if_unreachable(timeout: float = 3.0) -> bool:
    """With no route to the hub (HF_ENDPOINT), read datasets from the local cache only: a missing one then fails at
    once instead of after the hub client's retries. Must run before datasets/huggingface_hub are imported."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)),
                                 timeout=timeout).close()
        return False
    except OSError:
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
        return True


def task_manager(include_path: str | None):
    from lm_eval.tasks import TaskManager

    if include_path and not Path(include_path).is_dir():
        raise LlfError(f"{include_path} is not a directory", key="--include-path",
                       fix="pass the directory holding your task YAML files")
    return TaskManager(include_path=include_path) if include_path else TaskManager()


def check_tasks(manager, tasks: list[str]) -> None:
    """Every name is a task, group or tag lm-eval knows; and each task's data loads (offline: which is missing)."""
    known = set(manager.all_tasks)
    for name in tasks:
        if name not in known:
            close = nearest(name, sorted(known))
            raise LlfError(f"lm-eval has no task {name!r}" + (f" (did you mean {close}?)" if close else ""),
                           key="--tasks", fix="list them with `lm-eval ls tasks`, or add your own YAML with "
                                              "--include-path DIR")
    for name in tasks:
        try:
            with _quiet_logs():
                manager.load([name])
        except Exception as exc:  # noqa: BLE001 - datasets raises many kinds (connection, not found, offline)
            dataset = _dataset_of(manager, name)
            raise LlfError(f"task {name}: its dataset {dataset or '?'} could not be loaded "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})",
                           key="--tasks", fix=OFFLINE_FIX) from None


def _dataset_of(manager, name: str) -> str | None:
    entry = manager.task_index.get(name)
    cfg = (entry.cfg or {}) if entry is not None else {}
    path = cfg.get("dataset_path")
    if path and cfg.get("dataset_name"):
        return f"{path} ({cfg['dataset_name']})"
    return path


def pick_backend(backend: str, device: str) -> str:
    if backend != "auto":
        return backend
    import importlib.util

    import torch

    gpu = torch.cuda.is_available() and not device.startswith("cpu")
    return "vllm" if gpu and importlib.util.find_spec("vllm") is not None else "hf"


@contextlib.contextmanager
def model_args(run: Run, backend: str):
    """lm-eval model arguments for the run: base + adapter (a chain merged up to its last adapter, in a temporary
    directory removed afterwards)."""
    model = run.data.get("model") or {}
    base, adapters = model.get("base"), list(model.get("adapters") or [])
    for path in adapters:
        if not Path(path, "adapter_config.json").is_file():
            raise LlfError(f"adapter {path} is missing (no adapter_config.json)", fix="rerun the stage or export it")
    trust = bool(run.config.get("trust_remote_code", False))
    with tempfile.TemporaryDirectory(prefix="llf-bench-") as tmp:
        if len(adapters) > 1:
            base = _merge_chain(base, adapters[:-1], Path(tmp), trust)
        args: dict[str, Any] = {"pretrained": base, "trust_remote_code": trust}
        if backend == "vllm":
            if adapters:
                args.update({"enable_lora": True, "lora_local_path": adapters[-1]})
        else:
            args["dtype"] = "float32"
            if adapters:
                args["peft"] = adapters[-1]
                args["tokenizer"] = model.get("base")
        yield args


def _merge_chain(base: str, adapters: list[str], dest: Path, trust: bool) -> str:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    net = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=trust)
    for path in adapters:
        net = PeftModel.from_pretrained(net, path).merge_and_unload()
    net.save_pretrained(dest)
    AutoTokenizer.from_pretrained(base, trust_remote_code=trust).save_pretrained(dest)
    return str(dest)


def run_tasks(run: Run, options: BenchOptions, manager) -> dict[str, Any]:
    """lm-eval's simple_evaluate for one model; its full output (results, versions, n-shot, configs)."""
    import lm_eval

    backend = pick_backend(options.backend, options.device)
    with model_args(run, backend) as args:
        kwargs: dict[str, Any] = {"model": backend, "model_args": args, "tasks": list(options.tasks),
                                  "task_manager": manager, "limit": options.limit, "batch_size": options.batch_size,
                                  "apply_chat_template": options.apply_chat_template, **options.extra}
        if options.num_fewshot is not None:
            kwargs["num_fewshot"] = options.num_fewshot
        kwargs["device"] = _device(options.device)
        output = lm_eval.simple_evaluate(**kwargs)
    if output is None:
        raise LlfError("lm-eval returned no results", fix="run again with a single process")
    output["backend"] = backend
    return output


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def record(output: dict[str, Any], options: BenchOptions, version: str) -> dict[str, Any]:
    """What goes under `benchmarks` in evaluation_results.json: per task, lm-eval's metrics as it named them
    ("acc,none", "acc_stderr,none", ...), the task version, n-shot, row cap, and how many rows were scored."""
    out = {}
    samples = output.get("n-samples") or {}
    for task, metrics in (output.get("results") or {}).items():
        out[task] = {
            "metrics": {k: v for k, v in metrics.items() if k != "alias" and not isinstance(v, str)},
            "version": (output.get("versions") or {}).get(task),
            "n_shot": (output.get("n-shot") or {}).get(task),
            "limit": options.limit,
            "samples": (samples.get(task) or {}).get("effective"),
            "lm_eval": version,
            "backend": output.get("backend"),
        }
    return out


def headline(metrics: dict[str, Any]) -> tuple[str, float | None, float | None]:
    """The metric a table shows for a task: acc, else exact_match, else the first number; with its stderr."""
    names = [k for k in metrics if "_stderr" not in k]
    for want in ("acc,", "acc_norm,", "exact_match,"):
        for name in names:
            if name.startswith(want):
                break
        else:
            continue
        break
    else:
        name = names[0] if names else ""
    stderr_key = name.replace(",", "_stderr,", 1)
    value, err = metrics.get(name), metrics.get(stderr_key)
    return name, value if isinstance(value, (int, float)) else None, err if isinstance(err, (int, float)) else None


@contextlib.contextmanager
def _quiet_logs():
    import logging

    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)

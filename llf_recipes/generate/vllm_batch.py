"""`generate --backend vllm`: the prompts answered in batches by vLLM's offline engine, the way LLaMA-Factory's
scripts/vllm_infer.py does it: LLaMA-Factory parses the arguments (its vLLM version check, one adapter at most),
loads the tokenizer and template, encodes each prompt as its chat engines do, and vLLM generates from the token ids
with the template's stop tokens and the run's adapter as a LoRA request.

Each prompt is sampled with its own seed (seed + row index), as on the Hugging Face backend, so a resumed run
writes what an uninterrupted one would. Batches are written as they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from llf_recipes.errors import LlfError

BATCH = 64  # prompts handed to vLLM at once: large enough to keep the GPU busy, small enough to write often


def engine_args(model_args) -> dict[str, Any]:
    """vLLM's LLM(...) arguments from LLaMA-Factory's model arguments (vllm_maxlen, vllm_gpu_util, vllm_config...)."""
    from llamafactory.extras.misc import get_device_count

    args: dict[str, Any] = {
        "model": model_args.model_name_or_path,
        "trust_remote_code": model_args.trust_remote_code,
        "dtype": model_args.infer_dtype,
        "max_model_len": model_args.vllm_maxlen,
        "tensor_parallel_size": get_device_count() or 1,
        "gpu_memory_utilization": model_args.vllm_gpu_util,
        "enforce_eager": model_args.vllm_enforce_eager,
        "disable_log_stats": True,
        "enable_lora": model_args.adapter_name_or_path is not None,
        "max_lora_rank": model_args.vllm_max_lora_rank,
    }
    if isinstance(model_args.vllm_config, dict):
        args.update(model_args.vllm_config)
    return args


def sampling_params(sampling: dict[str, Any], num_return: int, seed: int, stop_token_ids: list[int]):
    from vllm import SamplingParams

    from llf_recipes.sampling import vllm_top_k

    return SamplingParams(n=num_return, temperature=sampling["temperature"], top_p=sampling["top_p"],
                          top_k=vllm_top_k(sampling["top_k"]), repetition_penalty=sampling["repetition_penalty"],
                          max_tokens=sampling["max_new_tokens"], stop_token_ids=stop_token_ids,
                          skip_special_tokens=True, seed=seed)


def answers(config: dict[str, Any], todo: list, request, *, quiet: Callable, failed: Callable
            ) -> Iterator[tuple[int, dict[str, Any], list[str]]]:
    """(index, row, answers) for every prompt to do, a batch at a time."""
    try:
        with quiet():
            from llamafactory.hparams import get_infer_args
            from llamafactory.model import load_tokenizer
            from vllm import LLM
            from vllm.lora.request import LoRARequest

            from llf_recipes.engines.lf_templates import template_for

            model_args, data_args, _, _ = get_infer_args(config)
            tokenizer = load_tokenizer(model_args)["tokenizer"]
            template = template_for(tokenizer, data_args)
            llm = LLM(**engine_args(model_args))
            adapters = model_args.adapter_name_or_path
            lora = LoRARequest("default", 1, adapters[0]) if adapters else None
            stop = template.get_stop_token_ids(tokenizer)
    except (KeyboardInterrupt, LlfError):
        raise
    except Exception as exc:  # noqa: BLE001 - the engine's failure, reported with its log
        raise failed(f"vLLM could not load {config['model_name_or_path']}", exc) from None
    for start in range(0, len(todo), BATCH):
        chunk = todo[start:start + BATCH]
        prompts, params = [], []
        for index, row in chunk:
            messages = [*row["_prompt"], {"role": "assistant", "content": ""}]
            ids, _ = template.encode_oneturn(tokenizer, messages, row.get("_system") or None, row.get("_tools") or None)
            prompts.append({"prompt_token_ids": ids})
            params.append(sampling_params(request.sampling, request.num_return, request.seed + index, stop))
        try:
            with quiet():
                outputs = llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
        except (KeyboardInterrupt, LlfError):
            raise
        except Exception as exc:  # noqa: BLE001
            raise failed(f"vLLM did not answer rows {chunk[0][0]}-{chunk[-1][0]}", exc) from None
        for (index, row), output in zip(chunk, outputs):
            yield index, row, [o.text for o in output.outputs]

"""`generate`: answers to every prompt of a dataset from a run's model, one JSON line per prompt.

Prompts are read and aligned by LLaMA-Factory's own data code (the dataset's registered columns, its template's
system prompt) and answered by LLaMA-Factory's ChatModel, the code `ask`, `chat` and `serve` use. Each finished
prompt is appended to the output at once, so an interrupted run keeps what it finished; a rerun with the same settings
skips those prompts (a torn last line is dropped and its prompt generated again). Sampling is seeded per prompt
(seed + row index), so a rerun or a resumed run gives the same answers as one uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError


@dataclass
class Request:
    run_dir: Path
    data: dict[str, Any]  # the run's manifest; for a plain model directory, a stand-in naming it and its template
    datasets: list[str]
    output: Path
    data_dir: str | None = None
    num_return: int = 1
    sampling: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    seed: int = 42
    progress: bool = True
    backend: str = "huggingface"  # LLaMA-Factory's infer_backend: huggingface (ChatModel) or vllm (batches)

    @property
    def settings(self) -> dict[str, Any]:
        """What decides the answers; kept in every row, and a resumed output must have been written with the same."""
        return {"run": str(self.run_dir.resolve()), "model": model_id(self.run_dir, self.data), "datasets": self.datasets, "num_return": self.num_return,
                "seed": self.seed, "backend": self.backend, **self.sampling}


def model_id(run_dir: Path, data: dict[str, Any]) -> str:
    model = data.get("model") or {}
    return ",".join([str(model.get("base")), *map(str, model.get("adapters") or [])])


def plain_model(path: Path, template: str | None) -> dict[str, Any]:
    """A stand-in manifest for a model directory that no llf-recipes run wrote (a hub download, a merged model)."""
    if not (path / "config.json").is_file():
        raise LlfError(f"{path} is neither a run (no llf-run.json) nor a model directory (no config.json)",
                       fix="pass a stage's output directory, a recipe name, or a Hugging Face model directory")
    if not template:
        raise LlfError(f"{path} is a plain model directory: its chat template is not recorded", key="--template",
                       fix="pass --template NAME (LLaMA-Factory's template name, e.g. qwen)")
    return {"model": {"base": str(path.resolve()), "adapters": [], "template": template}}


def check_sampling(num_return: int, sampling: dict[str, Any]) -> None:
    if num_return < 1:
        raise LlfError(f"--num-return {num_return} must be at least 1", key="--num-return")
    from llf_recipes.sampling import is_greedy

    if num_return > 1 and is_greedy(sampling):
        raise LlfError(f"--num-return {num_return} with --temperature 0 would repeat one greedy answer",
                       key="--num-return", fix="sample with --temperature above 0 (e.g. 0.8), or --num-return 1")


def done_indexes(output: Path, settings: dict[str, Any]) -> set[int]:
    """Row indexes already in `output`. A torn last line (an interrupted write) is cut off so appending stays clean;
    rows written with other settings stop the run rather than mix two generations in one file."""
    if not output.is_file():
        return set()
    raw = output.read_bytes()
    keep = raw[: raw.rfind(b"\n") + 1]
    if len(keep) != len(raw):
        with open(output, "r+b") as fh:
            fh.truncate(len(keep))
    done: set[int] = set()
    for number, line in enumerate(keep.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            index, theirs = int(row["index"]), row["settings"]
        except (ValueError, KeyError, TypeError):
            raise LlfError("not a line written by llf-recipes generate", where=f"{output}:{number}",
                           fix="write to a new file with -o, or delete this one") from None
        if theirs != settings:
            changed = sorted(k for k in {*theirs, *settings} if theirs.get(k) != settings.get(k))
            raise LlfError(f"was generated with other settings ({', '.join(changed)} differ)", where=f"{output}:{number}",
                           fix="rerun with the same options to resume, or write to a new file with -o")
        done.add(index)
    return done


def prompt_rows(request: Request) -> list[dict[str, Any]]:
    """The datasets' rows as LLaMA-Factory aligns them (`_prompt`, `_response`, `_system`, `_tools`)."""
    from llf_recipes.eval.heldout import named_heldout
    from llf_recipes.generate.sources import prompt_source

    config = {"template": (request.data.get("model") or {}).get("template"),
              **{k: v for k, v in (request.data.get("config") or {}).items() if k in ("dataset_dir", "cutoff_len")}}
    with prompt_source(request.datasets, request.data_dir) as (names, data_dir):  # names, or one file by path
        held = named_heldout(names, config, request.data, data_dir, request.limit)
    if not held.rows:
        raise LlfError(f"LLaMA-Factory read no prompt from {', '.join(request.datasets)}", key="--dataset",
                       fix="a row needs a user turn; sharegpt rows end with an answer turn (it may be empty), "
                           'prompts alone are written {"instruction": "..."}')
    return held.rows


def reference_of(row: dict[str, Any]) -> Any:
    """The dataset's own answer: one text, or {chosen, rejected} for a preference row."""
    answers = [m.get("content", "") for m in row.get("_response") or []]
    if len(answers) == 2:
        return {"chosen": answers[0], "rejected": answers[1]}
    return answers[0] if answers else None


def generate(request: Request) -> dict[str, int]:
    """Answer every prompt not yet in the output; returns counts (prompts, skipped, generated)."""
    from llf_recipes.use import infer_config

    check_sampling(request.num_return, request.sampling)
    settings = request.settings
    done = done_indexes(request.output, settings)
    log = request.output.with_name(request.output.name + ".log")
    request.output.parent.mkdir(parents=True, exist_ok=True)
    with _engine_quiet(log):
        rows = prompt_rows(request)
    todo = [(i, row) for i, row in enumerate(rows) if i not in done]
    counts = {"prompts": len(rows), "skipped": len(rows) - len(todo), "generated": 0}
    if not todo:
        return counts
    config = infer_config(request.run_dir, request.data, infer_backend=request.backend, **request.sampling)
    from llf_recipes.stepslog import progress_bar

    bar = progress_bar(len(rows), f"generate {request.output.name}", request.progress, "prompt", counts["skipped"])
    if request.backend == "vllm":
        from llf_recipes.generate import vllm_batch

        answered = vllm_batch.answers(config, todo, request, quiet=lambda: _engine_quiet(log),
                                      failed=lambda what, exc: _engine_error(what, exc, log))
    else:
        answered = _chat_answers(config, todo, request, log)
    with open(request.output, "a", encoding="utf-8") as out:
        for index, row, answers in answered:
            record = {"index": index, "prompt": row["_prompt"], "system": row.get("_system") or None,
                      "reference": reference_of(row), "answers": answers, "settings": settings}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            counts["generated"] += 1
            bar.update(1)
    bar.close()
    return counts


@contextlib.contextmanager
def _engine_quiet(log: Path):
    """LLaMA-Factory and transformers print to stdout and stderr: that goes to the log, the terminal keeps progress."""
    from llf_recipes.console import output_to

    with output_to(log), contextlib.redirect_stdout(sys.stderr):
        yield


def _chat_answers(config: dict[str, Any], todo: list, request: Request, log: Path):
    """(index, row, answers) for every prompt to do, one at a time, from LLaMA-Factory's ChatModel."""
    with _engine_quiet(log):
        model = _load(config, log)
    for index, row in todo:
        with _engine_quiet(log):
            answers = _answer(model, row, request, index, log)
        yield index, row, answers


def _load(config: dict[str, Any], log: Path):
    try:
        from llf_recipes.engines.lf_templates import chat_model

        return chat_model(config)
    except (KeyboardInterrupt, LlfError):
        raise
    except Exception as exc:  # noqa: BLE001 - the engine's failure, reported with its log
        raise _engine_error(f"LLaMA-Factory could not load {config['model_name_or_path']}", exc, log) from None


def _answer(model, row: dict[str, Any], request: Request, index: int, log: Path) -> list[str]:
    from transformers import set_seed

    set_seed(request.seed + index)
    try:
        responses = model.chat(row["_prompt"], system=row.get("_system") or None, tools=row.get("_tools") or None,
                               num_return_sequences=request.num_return)
    except (KeyboardInterrupt, LlfError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise _engine_error(f"the model did not answer row {index}", exc, log) from None
    return [r.response_text for r in responses]


def _engine_error(what: str, exc: Exception, log: Path) -> LlfError:
    from llf_recipes.console import engine_failure

    return engine_failure(log, what, exc)

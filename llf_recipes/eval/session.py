"""Scoring one run: its tokenizer and template, its test rows, its model; losses, preferences, samples, GRPO
accuracy through the run's rewards, and the general-knowledge set of the forgetting check."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from llf_recipes.eval import general, grpo_accuracy, heldout, scoring
from llf_recipes.eval.runs import Options, Run
from llf_recipes.progress import clock


@dataclass
class Plan:
    """What scoring a run needs, before its model is loaded."""

    model: dict[str, Any]
    config: dict[str, Any]
    tokenizer: Any
    template: Any
    test: heldout.HeldOut | None
    pref: heldout.HeldOut | None
    jobs: dict[str, tuple[list, list]]  # test / chosen / rejected -> (input ids, labels)
    sample_rows: list[dict[str, Any]]
    grpo_rows: list[dict[str, Any]] = field(default_factory=list)
    grpo_data: dict[str, Any] | None = None
    general_items: list[dict[str, Any]] = field(default_factory=list)
    general_jobs: tuple[list, list] | None = None
    general_source: str = ""

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id


def prepare(run: Run, options: Options) -> Plan:
    """The run's tokenizer and template, its test and preference rows, tokenized as LLaMA-Factory would."""
    config = dict(run.config)
    model = run.data.get("model") or {}
    config.setdefault("template", model.get("template"))
    config["model_name_or_path"] = model.get("base") or config.get("model_name_or_path")
    config.setdefault("template", options.template)
    limit = options.max_samples or None
    with _quiet():
        tokenizer, template, args = _tokenizer(config, run.data, options)
        if grpo_accuracy.wants_grpo(config, options.datasets):  # answers scored by rewards, not losses
            plan = Plan(model, config, tokenizer, template, None, None, {}, [])
            if options.max_samples:
                plan.grpo_rows, plan.grpo_data = grpo_accuracy.eval_rows(config, run.data, options.datasets, limit)
        else:
            test = _set(options.datasets, config, run, options, limit) if options.max_samples else None
            pref = _pref_set(test, config, run, options, limit) if options.max_samples else None
            jobs = _jobs(test, pref, options, template, tokenizer, args)
            plan = Plan(model, config, tokenizer, template, test, pref, jobs, _sample_rows(test or pref, config, run, options))
        if options.general:
            path = general.resolve(options.general, options.data_dir)
            plan.general_items = general.read_items(path)
            plan.general_jobs = general.encode(plan.general_items, template, tokenizer, args)
            plan.general_source = str(path)
    return plan


def score_run(run: Run, options: Options) -> dict[str, Any]:
    """The run's scores. What the engine and its libraries print goes to options.log; the progress bar (on a
    terminal) or one closing line (elsewhere) to the screen."""
    with _screen(options.log) as screen:
        started = time.monotonic()
        out, total = _score(run, options, screen)
        if total and not options.progress and options.summary_line:
            print(f"eval {run.name}: {total} sequence(s) scored in {clock(time.monotonic() - started)}", file=screen,
                  flush=True)
        return out


@contextlib.contextmanager
def _screen(log: str | None):
    """The stream our own lines go to, while everything else this process writes goes to `log` (not with
    --verbose): the stderr the process started with, duplicated before it is redirected."""
    if not log:
        yield sys.stderr
        return
    from llf_recipes.console import output_to

    sys.stderr.flush()
    screen = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="replace")
    try:
        with output_to(log):
            yield screen
    finally:
        screen.close()


def _score(run: Run, options: Options, screen) -> tuple[dict[str, Any], int]:
    plan = prepare(run, options)
    test, pref = plan.test, plan.pref
    out: dict[str, Any] = {"test_data": test.describe() if test else None,
                           "preference_data": pref.describe() if pref else None}
    if plan.grpo_data:
        out["test_data"] = plan.grpo_data
    elif test is None and pref is None and options.max_samples:
        out["notes"] = ["no held-out rows: the run had neither val_size nor eval_dataset; pass --dataset NAME"]
    total = (sum(len(ids) for ids, _ in plan.jobs.values()) + len(plan.sample_rows) + len(plan.grpo_rows)
             + (len(plan.general_jobs[0]) if plan.general_jobs else 0))
    if not total:
        return out, 0
    device = scoring.pick_device(options.device)
    dtype = scoring.pick_dtype(options.dtype, device)
    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"eval {run.name}", unit="seq", file=screen, disable=not options.progress,
               dynamic_ncols=True)
    try:
        with _quiet():
            net = scoring.load_model(plan.model, device, dtype,
                                     trust_remote_code=bool(plan.config.get("trust_remote_code", True)))
        losses = {key: scoring.sequence_losses(net, ids, labels, pad_id=plan.pad_id, batch_size=options.batch_size,
                                               progress=bar.update)
                  for key, (ids, labels) in plan.jobs.items()}
        if "test" in losses:
            out.update(scoring.loss_metrics(losses["test"]))
        elif "chosen" in losses and test is pref and not options.skip_perplexity:
            out.update(scoring.loss_metrics(losses["chosen"]))  # the test set is the pairs: loss of the chosen answers
        if "chosen" in losses:
            out.update(scoring.preference_metrics([x.mean for x in losses["chosen"]],
                                                  [x.mean for x in losses["rejected"]]))
        if plan.sample_rows:
            bar.set_description(f"eval {run.name}: samples")
            with _quiet():  # greedy decoding with a sampling generation_config warns about unused flags
                out["generation_samples"] = scoring.generate(net, plan.tokenizer, plan.template, plan.sample_rows,
                                                             max_new_tokens=options.max_new_tokens or 64,
                                                             progress=bar.update)
        if plan.grpo_rows:
            bar.set_description(f"eval {run.name}: answers")
            rewards, notes = grpo_accuracy.reward_functions(plan.config, run.data.get("cwd"))
            length = options.max_new_tokens or int(plan.config.get("max_completion_length") or 256)
            with _quiet():
                out.update(grpo_accuracy.score(net, plan.tokenizer, plan.grpo_rows, rewards, max_new_tokens=length,
                                               samples=options.generation_samples, progress=bar.update))
            out["notes"] = notes + out.get("notes", [])
        if plan.general_jobs:
            bar.set_description(f"eval {run.name}: general")
            out["general"] = general.score(net, plan.general_items, *plan.general_jobs, pad_id=plan.pad_id,
                                           batch_size=options.batch_size, source=plan.general_source,
                                           progress=bar.update)
        out["device"] = f"{device} ({str(dtype).replace('torch.', '')})"
    finally:
        bar.close()
    return out, total


def _tokenizer(config: dict[str, Any], data: dict[str, Any], options: Options):
    from llamafactory.hparams import ModelArguments
    from llamafactory.model import load_tokenizer

    from llf_recipes.engines.lf_templates import template_for

    args = heldout.data_args(config, heldout.data_dir_of(config, data, options.data_dir))
    model_args = ModelArguments(model_name_or_path=config["model_name_or_path"],
                                trust_remote_code=bool(config.get("trust_remote_code", True)))
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    template = template_for(tokenizer, args)
    return tokenizer, template, args


def _set(names: list[str], config, run: Run, options: Options, limit):
    if names:
        return heldout.named_heldout(names, config, run.data, options.data_dir, limit)
    return heldout.run_heldout(config, run.data, options.data_dir, limit)


def _pref_set(test, config, run: Run, options: Options, limit):
    """Pairs for preference accuracy: --pref-dataset, else the test set when it holds pairs."""
    if options.pref_datasets:
        pref = heldout.named_heldout(options.pref_datasets, config, run.data, options.data_dir, limit)
        return pref if pref.kind == "pairs" else None
    return test if test is not None and test.kind == "pairs" else None


def _jobs(test, pref, options: Options, template, tokenizer, args) -> dict[str, tuple[list, list]]:
    """Which sequences to score: the test answers (unless --skip-perplexity), chosen and rejected of the pairs."""
    jobs: dict[str, tuple[list, list]] = {}
    if test is not None and not options.skip_perplexity:
        if test.kind in ("sft", "text"):
            enc = heldout.encode(test, template, tokenizer, args)
            jobs["test"] = (enc["input_ids"], enc["labels"])
        elif test.kind == "pairs" and test is not pref:  # a preference test set: the loss of its chosen answers
            enc = heldout.encode(test, template, tokenizer, args)
            jobs["test"] = (enc["chosen_input_ids"], enc["chosen_labels"])
    if pref is not None:
        enc = heldout.encode(pref, template, tokenizer, args)
        jobs["chosen"] = (enc["chosen_input_ids"], enc["chosen_labels"])
        jobs["rejected"] = (enc["rejected_input_ids"], enc["rejected_labels"])
    return jobs


def _sample_rows(held, config, run: Run, options: Options) -> list[dict[str, Any]]:
    """Prompts for generation samples: the test rows, else the first training rows."""
    n = options.generation_samples
    if n <= 0:
        return []
    if held is None and config.get("dataset"):
        with _quiet():
            held = heldout.training_rows(config, run.data, options.data_dir, n)
    if held is None or held.kind == "text":
        return []
    return [{**row, "_response": row["_response"][:1]} for row in held.rows[:n]]


@contextlib.contextmanager
def _quiet():
    """LLaMA-Factory and transformers log loading chatter to stdout/stderr; the table and the bar are the output."""
    import logging

    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    lf_logger = logging.getLogger("llamafactory")
    lf_level = lf_logger.level
    lf_logger.setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()
        lf_logger.setLevel(lf_level)

"""What `run` would do with each stage and what it would stop on before launch, for `run --dry-run`: the same
decisions and checks as the real run (pipeline.py), made without taking a lock or writing anything."""

from __future__ import annotations

import contextlib
import io

from llf_recipes import manifest
from llf_recipes.errors import LlfError
from llf_recipes.launch import StagePlan
from llf_recipes.pipeline import (
    Decision,
    check_inputs,
    check_registered,
    checkpoint_layout,
    decide,
    fingerprint,
    run_dir_of,
)


def outlook(plan: StagePlan, force: bool) -> Decision:
    """Run, skip or resume, as `run` would decide it now from the stage's manifest and checkpoints."""
    previous = manifest.read(run_dir_of(plan))
    if previous is None:
        return Decision("run", "first run")
    try:
        current = fingerprint(plan, previous)
    except (OSError, LlfError) as exc:  # a dataset file that cannot be read: the data check names it
        return Decision("run", f"its inputs cannot be read yet ({str(exc).splitlines()[0]})")
    return decide(plan, previous, current, force, checkpoint_layout(plan))


def outlooks(plans: list[StagePlan], force: bool) -> list[Decision]:
    """`outlook` for each stage in plan order: a stage that reads one `run` would run or resume first runs too (the
    earlier stage's new finish is part of what it starts from), whatever its own manifest says."""
    decisions: dict[str, Decision] = {}
    for p in plans:
        decision = outlook(p, force)
        first = next((n for n in p.rendered.needs if n in decisions and decisions[n].action != "skip"), None)
        if first is not None and decision.action != "run":
            decision = Decision("run", f"stage {first} runs first")
        decisions[p.stage] = decision
    return [decisions[p.stage] for p in plans]


def input_problems(plans: list[StagePlan], command=None) -> tuple[list[tuple[str, LlfError]], list[str]]:
    """The errors `run` stops on before the first stage starts, each with the stage it stops: an earlier stage it
    reads that has not completed, a dataset that is not registered (or a dataset_info.json that cannot be read) where
    LLaMA-Factory looks; and the notes those checks print."""
    names = {p.stage for p in plans}
    problems: list[tuple[str, LlfError]] = []
    notes = io.StringIO()
    for p in plans:
        with contextlib.redirect_stderr(notes):
            for check, extra in ((check_inputs, (command,)), (check_registered, ())):
                try:
                    check(p, names, *extra)
                except LlfError as exc:
                    problems.append((p.stage, exc))
    return problems, [line for line in notes.getvalue().splitlines() if line.strip()]

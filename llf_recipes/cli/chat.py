"""`llf-recipes chat`: LLaMA-Factory's interactive chat on a run's model."""

from __future__ import annotations

import subprocess

from llf_recipes.cli.common import add_run_target, add_sampling_args, add_verb, backend_from, run_from, sampling_from
from llf_recipes.launchers.local import resolve_program
from llf_recipes.use import inference_yaml


def add_parser(sub) -> None:
    p = add_verb(sub, "chat", "chat with a run's model in the terminal (llamafactory-cli chat; type exit to quit)", """
        llf-recipes chat saves/sft-huanhuan/sft
        llf-recipes chat zhihu --max-new-tokens 512
    """)
    add_run_target(p)
    add_sampling_args(p)
    p.set_defaults(func=main)


def main(args) -> int:
    sampling, backend = sampling_from(args), backend_from(args)
    run_dir, data = run_from(args)
    path = inference_yaml(run_dir, data, "chat", sampling, backend)
    try:
        return subprocess.call([resolve_program("llamafactory-cli"), "chat", str(path)])
    except KeyboardInterrupt:
        return 130

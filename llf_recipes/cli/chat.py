"""`llf-recipes chat`: LLaMA-Factory's interactive chat on a run's model."""

from __future__ import annotations

from llf_recipes.cli.common import add_run_target, add_sampling_args, add_verb, backend_from, run_from, sampling_from
from llf_recipes.use import infer_config


def add_parser(sub) -> None:
    p = add_verb(sub, "chat", "chat with a run's model in the terminal (LLaMA-Factory's ChatModel; exit or Ctrl-D quits)", """
        llf-recipes chat saves/sft-huanhuan/sft
        llf-recipes chat zhihu --max-new-tokens 512
    """)
    add_run_target(p)
    add_sampling_args(p)
    p.set_defaults(func=main)


def main(args) -> int:
    sampling, backend = sampling_from(args), backend_from(args)
    run_dir, data = run_from(args)
    config = infer_config(run_dir, data, infer_backend=backend, **sampling)
    from llf_recipes.chat_loop import HELP, converse, load

    log = run_dir / "llf-chat.log"
    try:
        print(f"loading the model of {run_dir} (engine output: {log})", flush=True)
        model = load(config, log)
    except KeyboardInterrupt:
        return 130
    print(f"chatting with {run_dir}: {HELP}", flush=True)
    return converse(model, log)

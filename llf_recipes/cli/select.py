"""`llf-recipes select IN -o OUT --ifd --model RUN|MODEL --top 0.3`: keep the rows a model finds hardest to follow."""

from __future__ import annotations

from pathlib import Path

from llf_recipes.cli.verb import DEVICES, add_verb
from llf_recipes.errors import LlfError


def add_parser(sub) -> None:
    p = add_verb(sub, "select", "keep the rows with the highest instruction-following difficulty (IFD) for a model", """
        llf-recipes select clean.jsonl -o train.jsonl --ifd --model Qwen2.5-0.5B-Instruct --top 0.3
        llf-recipes select clean.jsonl -o train.jsonl --ifd --model saves/sft-huanhuan/sft --min 0.5 --max 1.0
    """)
    p.description += """

IFD = PPL(answer | instruction) / PPL(answer) under the model, over the answer's tokens (the instruction in the
tokenizer's chat template). Scores go to OUT's .ifd.jsonl beside it, batch by batch; running the same command again
resumes from there. --min/--max bound the score, then --top keeps that fraction of the remaining rows, highest first;
the rows written keep their input order."""
    p.add_argument("input", metavar="IN", help="JSONL rows with an instruction and an answer field")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the rows kept (JSONL)")
    p.add_argument("--ifd", action="store_true", help="score by instruction-following difficulty (the only score today)")
    p.add_argument("--model", required=True, metavar="RUN|MODEL",
                   help="a run (stage output directory or recipe name) or a Hugging Face model directory")
    p.add_argument("--top", type=float, metavar="F", help="keep this fraction of the rows, highest scores first (e.g. 0.3)")
    p.add_argument("--min", type=float, metavar="S", help="keep rows scoring at least S")
    p.add_argument("--max", type=float, metavar="S", help="keep rows scoring at most S (above 1: the instruction hinders)")
    p.add_argument("--prompt", metavar="FIELD", help="the instruction's field (default: instruction (+ input), prompt, "
                                                    "query or question)")
    p.add_argument("--response", metavar="FIELD", help="the answer's field (default: output, response or answer)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="rows per forward pass (default: 8)")
    p.add_argument("--cutoff", type=int, default=1024, metavar="N",
                   help="tokens kept of the instruction (its end) and of the answer (its start) (default: 1024)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: a GPU when there is one")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                   help="weights dtype (default: auto)")
    p.add_argument("--output-root", default="saves", metavar="DIR", help="where recipe names are looked up")
    p.set_defaults(func=main)


def main(args) -> int:
    from llf_recipes.eval.ifd import IfdOptions, select

    if not args.ifd:
        raise LlfError("select needs a score to select by", key="--ifd", fix="add --ifd")
    if args.top is None and args.min is None and args.max is None:
        raise LlfError("nothing to select by", key="--top", fix="add --top 0.3 (and/or --min/--max)")
    if args.top is not None and not 0 < args.top <= 1:
        raise LlfError(f"--top is a fraction above 0 and at most 1, not {args.top}", key="--top")
    for option, value in (("--batch-size", args.batch_size), ("--cutoff", args.cutoff)):
        if value < 1:
            raise LlfError(f"{option} must be at least 1, not {value}", key=option)
    opts = IfdOptions(input=Path(args.input), output=Path(args.output), model=args.model, top=args.top, min=args.min,
                      max=args.max, prompt=args.prompt, response=args.response, batch_size=args.batch_size,
                      cutoff=args.cutoff, device=args.device, dtype=args.dtype, output_root=args.output_root)
    if opts.input.resolve() in (opts.output.resolve(), opts.scores_path.resolve()):
        raise LlfError("an output would replace the input", key="-o", fix="write the selected rows to another file")
    kept, scored = select(opts)
    print(f"{opts.output}: {kept} of {scored} scored rows kept (scores in {opts.scores_path})")
    return 0

"""`llf-recipes convert`: source rows -> LLaMA-Factory JSONL, streaming, all or nothing."""

from __future__ import annotations

import sys
from pathlib import Path

from llf_recipes.catalog import SAMPLES_DIR
from llf_recipes.cli.common import add_catalog_args, add_verb, catalog_from
from llf_recipes.cli.verb import add_alias
from llf_recipes.data.convert import KINDS, convert_file
from llf_recipes.errors import LlfError


def add_parser(sub) -> None:
    p = add_verb(sub, "convert", "convert a dataset (json, jsonl, parquet, csv, arrow) into a LLaMA-Factory layout", """
        llf-recipes convert zhihu_sft --sample-data --data-dir data   # the bundled sample rows
        llf-recipes convert ultrafeedback_kto --input train_prefs.parquet --data-dir data
        llf-recipes convert my_pairs.jsonl --kind pairs -o data/my_pairs.jsonl --skip-bad
        llf-recipes convert chats.jsonl --kind openai_to_sharegpt -o data/chats.jsonl   # tool calls kept
        llf-recipes convert alpaca.json --kind alpaca_to_sharegpt -o data/alpaca_chat.jsonl
        llf-recipes convert dpo_en_demo.json --kind pairs -o data/pairs.jsonl   # LLaMA-Factory's sharegpt preference rows
    """)
    p.add_argument("source", metavar="NAME|FILE", help="a dataset entry name, or a data file with --kind")
    p.add_argument("--input", metavar="FILE", help="for NAME: the downloaded source file to read")
    p.add_argument("--sample-data", dest="sample", action="store_true", help="for NAME: read the bundled sample rows")
    add_alias(p, "--sample", dest="sample", action="store_true")
    p.add_argument("--kind", choices=KINDS, help="for FILE: how to convert (NAME knows its own)")
    p.add_argument("-o", "--output", metavar="FILE", help="output JSONL (default: DATA_DIR/<entry file_name>)")
    p.add_argument("--data-dir", default="data", metavar="DIR", help="LLaMA-Factory's dataset_dir (default: data)")
    p.add_argument("--limit", type=int, metavar="N", help="convert at most N source rows")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a conversion option, e.g. one_shot=false for gsm8k_grpo")
    p.add_argument("--skip-bad", action="store_true", help="set bad rows aside in OUTPUT.rejects.jsonl instead of stopping")
    add_catalog_args(p)
    p.set_defaults(func=main)


def resolve(args) -> tuple[Path, Path, str, dict]:
    """-> (input file, output file, kind, options)."""
    from llf_recipes.yamlio import scalar

    options = {k: scalar(v) for k, _, v in (o.partition("=") for o in args.option)}
    as_file = Path(args.source)
    if as_file.is_file() or as_file.is_dir():  # a folder of one file type, as LLaMA-Factory reads one
        if not args.kind:
            raise LlfError("converting a file needs --kind", fix=f"one of {', '.join(KINDS)}")
        return as_file, Path(args.output or Path(args.data_dir) / f"{as_file.stem}.jsonl"), args.kind, options
    catalog = catalog_from(args)
    if args.source not in catalog.datasets:
        from llf_recipes.data.userdata import looks_like_path, missing_file

        if looks_like_path(args.source) or args.kind:
            raise missing_file(args.source, "dataset_info.d/ (llf-recipes list --datasets)")
    ds = catalog.dataset(args.source)
    kind = args.kind or ds.convert.get("kind")
    if not kind:
        raise LlfError(f"entry {ds.name!r} declares no conversion", where=str(ds.fragment), fix="pass --kind")
    if args.sample:
        if not ds.sample:
            raise LlfError(f"entry {ds.name!r} has no bundled sample", where=str(ds.fragment))
        src = SAMPLES_DIR / ds.sample
    elif args.input:
        src = Path(args.input)
    else:
        raise LlfError(f"where are {ds.name}'s rows?", fix=f"pass --input FILE (e.g. after `llf-recipes download {ds.name}`) or --sample-data")
    return src, Path(args.output or Path(args.data_dir) / ds.entry["file_name"]), kind, {**ds.convert.get("options", {}), **options}


def main(args) -> int:
    from llf_recipes import paths

    paths.directory(args.data_dir)
    src, dest, kind, options = resolve(args)
    paths.input_file(src)
    paths.output_file(dest)
    if paths.same_file(src, dest):
        raise LlfError(f"the output {dest} is the input file", key="-o",
                       fix="write the converted rows to another file; the source stays as it is")
    paths.settle([dest, dest.with_name(dest.name + ".rejects.jsonl")])
    report = convert_file(src, dest, kind, skip_bad=args.skip_bad, limit=args.limit, options=options)
    dropped = f", {report.dropped} dropped by the conversion" if report.dropped else ""
    print(f"{src} -> {dest}: {report.read} row(s) read, {report.written} written ({kind}){dropped}")
    if report.rejected:
        print(f"{len(report.rejected)} bad row(s) set aside in {report.rejects_path}; first: {report.rejected[0]}", file=sys.stderr)
    return 0

"""`llf-recipes check`: every row against what a stage needs, with line numbers; `--preview` shows rows as read."""

from __future__ import annotations

import json
from pathlib import Path

from llf_recipes.cli.common import add_catalog_args, add_verb, catalog_from
from llf_recipes.data.check import NEEDS, check_file
from llf_recipes.data.registry import INFO_NAME, parse_columns, read_info, user_entry


def add_parser(sub) -> None:
    p = add_verb(sub, "check", "check a dataset's rows against what a training stage needs", """
        llf-recipes check zhihu_rlhf --stage dpo --data-dir data
        llf-recipes check huanhuan --stage sft --preview 3
        llf-recipes check my.jsonl --stage kto --columns prompt=q,response=a,kto_tag=good
    """)
    p.add_argument("source", metavar="NAME|FILE", help="a registered/bundled entry name, or a data file")
    p.add_argument("--stage", required=True, choices=sorted(NEEDS), help="the stage the data feeds")
    p.add_argument("--data-dir", default="data", metavar="DIR", help="LLaMA-Factory's dataset_dir (default: data)")
    p.add_argument("--columns", metavar="COL=FIELD,...", help="for FILE: column mapping (default: the stage's usual fields)")
    p.add_argument("--preview", type=int, default=0, metavar="N", help="show the first N good rows as LLaMA-Factory maps them")
    p.add_argument("--show", type=int, default=5, metavar="N", help="how many bad rows to list (default: 5)")
    add_catalog_args(p)
    p.set_defaults(func=main)


def resolve(args) -> tuple[Path, dict]:
    data_dir = Path(args.data_dir)
    as_file = Path(args.source)
    if as_file.is_file():
        return as_file, user_entry(str(as_file), args.stage, parse_columns(args.columns))
    registered = read_info(data_dir / INFO_NAME)
    entry = registered.get(args.source) or catalog_from(args).dataset(args.source).entry
    file_name = Path(entry["file_name"])
    return (file_name if file_name.is_absolute() else data_dir / file_name), entry


def main(args) -> int:
    path, entry = resolve(args)
    report = check_file(path, args.stage, entry, preview=args.preview)
    for row in report.preview:
        print(json.dumps(row, ensure_ascii=False))
    good = report.rows - len(report.bad)
    print(f"{path}: {report.rows} row(s), {good} usable for stage {args.stage}, {len(report.bad)} bad")
    for bad in report.bad[: args.show]:
        print(f"  {bad.where}: {bad.message}")
    return 1 if report.bad else 0

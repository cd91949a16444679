"""`llf-recipes check`: rows as LLaMA-Factory will read them for a stage, with lines; `--preview` shows them converted."""

from __future__ import annotations

import json
from pathlib import Path

from llf_recipes.cli.common import add_catalog_args, add_verb, catalog_from
from llf_recipes.data.layouts import FORMATTINGS, STAGES, remote_dir
from llf_recipes.data.registry import INFO_NAME, parse_columns, read_info
from llf_recipes.errors import LlfError


def add_parser(sub) -> None:
    p = add_verb(sub, "check", "check a dataset's rows as LLaMA-Factory will read them for a training stage", """
        llf-recipes check zhihu_rlhf --stage dpo --data-dir data
        llf-recipes check glaive_toolcall_en_demo --stage sft --data-dir LLaMA-Factory/data --preview 2
        llf-recipes check my.jsonl --stage kto                  # a file: its layout is detected
        llf-recipes check my.jsonl --stage sft --columns prompt=q,response=a
    """)
    p.add_argument("source", metavar="NAME|FILE", help="an entry of DATA_DIR/dataset_info.json or dataset_info.d/, or a data file")
    p.add_argument("--stage", required=True, choices=STAGES, help="the stage the data feeds")
    p.add_argument("--data-dir", default="data", metavar="DIR", help="LLaMA-Factory's dataset_dir (default: data)")
    p.add_argument("--media-dir", metavar="DIR", help="LLaMA-Factory's media_dir (default: the data dir)")
    p.add_argument("--columns", metavar="COL=FIELD,...", help="for FILE: column mapping (default: detected)")
    p.add_argument("--tags", metavar="TAG=VALUE,...", help="for FILE: sharegpt tags (default: detected)")
    p.add_argument("--formatting", choices=FORMATTINGS, help="for FILE: formatting (default: detected)")
    p.add_argument("--preview", type=int, default=0, metavar="N",
                   help="show the first N usable rows after LLaMA-Factory's conversion (roles, contents, system, tools, media)")
    p.add_argument("--show", type=int, default=5, metavar="N", help="how many dropped or bad rows to list (default: 5)")
    add_catalog_args(p)
    p.set_defaults(func=main)


def report_for(args):
    from llf_recipes.data.check import check_entry, check_file

    as_file = Path(args.source)
    if as_file.exists() and (as_file.is_file() or not (Path(args.data_dir) / INFO_NAME).is_file()
                             or args.source not in read_info(Path(args.data_dir) / INFO_NAME)):
        from llf_recipes.data.userdata import detect_entry

        entry, found = detect_entry(as_file, args.stage, str(as_file), formatting=args.formatting,
                                    columns=parse_columns(args.columns), tags=parse_columns(args.tags, "--tags"))
        print(f"{as_file}: {found.layout}")
        return check_file(as_file, args.stage, entry, preview=args.preview, name=as_file.stem,
                          media_base=args.media_dir or args.data_dir)
    for option in ("columns", "tags", "formatting"):
        if getattr(args, option):
            raise LlfError(f"--{option} goes with a FILE; a NAME's entry says how to read it", key=f"--{option}")
    data_dir = args.data_dir
    if remote_dir(data_dir):
        from llf_recipes.data.check import CheckReport

        where = "the hub" if data_dir == "ONLINE" else f"the dataset_info.json of {data_dir[7:]} on the hub"
        return CheckReport(note=f"not checked: with dataset_dir {data_dir} LLaMA-Factory looks {args.source!r} up in {where}")
    registered = read_info(Path(data_dir) / INFO_NAME)
    if args.source in registered:
        entry = registered[args.source]
    else:
        entry = _catalog_entry(args, registered)
    if not Path(data_dir).is_dir():
        raise LlfError(f"the data folder {data_dir} does not exist", key="--data-dir",
                       fix="give LLaMA-Factory's dataset_dir, the folder that holds the data files (default: data)")
    return check_entry(entry, args.stage, data_dir, name=args.source, preview=args.preview, media_dir=args.media_dir)


def _catalog_entry(args, registered: dict) -> dict:
    """The entry of NAME in dataset_info.d/; an error naming both places looked in, and what looks like a missing file."""
    from llf_recipes.data.userdata import looks_like_path, missing_file

    catalog = catalog_from(args)
    if args.source in catalog.datasets:
        return catalog.dataset(args.source).entry
    info = Path(args.data_dir) / INFO_NAME
    if looks_like_path(args.source):
        raise missing_file(args.source, f"{info} or dataset_info.d/")
    from llf_recipes.suggest import nearest

    guess = nearest(args.source, [*registered, *catalog.datasets])
    looked = f"{info} or dataset_info.d/" if info.is_file() else f"dataset_info.d/ ({info} does not exist)"
    raise LlfError(f"no dataset entry named {args.source!r} in {looked}", key="NAME|FILE",
                   fix=(f"did you mean {guess!r}? " if guess else "") + f"register the file: llf-recipes register --file "
                       f"FILE --name {args.source} --stage {args.stage} --data-dir {args.data_dir}, or check a FILE directly")


def _placeholder_note(report) -> str:
    """What to say about rows holding identity.json's {{name}}/{{author}}: rows per placeholder, and how to fill them
    in (a sed command for a text file; GNU and BSD sed both take -i with an attached suffix)."""
    import shlex

    names = sorted(report.placeholders)
    counts = ", ".join(f"{{{{{n}}}}} in {report.placeholders[n]}" for n in names)
    note = (f"{report.placeholder_rows} row(s) hold LLaMA-Factory's identity placeholder(s) ({counts}), the first at "
            f"{report.placeholder_at}: nothing fills them in, the model learns them as written; replace them first")
    path = report.path
    if path is not None and path.suffix in (".json", ".jsonl", ".txt") and path.is_file():
        fill = "; ".join(f"s/{{{{ *{n} *}}}}/YOUR_{n.upper()}/g" for n in names)
        note += f", e.g. sed -i.bak {shlex.quote(fill)} {shlex.quote(str(path))}"
    return note


def main(args) -> int:
    from llf_recipes import paths

    paths.directory(args.data_dir)
    report = report_for(args)
    if report.note:
        print(report.note)
        return 0
    for row in report.preview:
        print(json.dumps(row, ensure_ascii=False))
    dropped = f", {len(report.dropped)} dropped by LLaMA-Factory" if report.dropped else ""
    errors = f", {len(report.errors)} that stop LLaMA-Factory" if report.errors else ""
    print(f"{report.path}: {report.rows} row(s), {report.usable} usable for stage {args.stage}{dropped}{errors}")
    for bad in (report.errors + report.dropped)[: args.show]:
        print(f"  {bad.where}: {bad.message}" + (f" (field {bad.key!r})" if bad.key else ""))
    for warn in report.warnings[: args.show]:
        print(f"  note: {warn.where}: {warn.message} (LLaMA-Factory keeps the row)")
    if report.placeholders:
        print(f"  note: {_placeholder_note(report)}")
    if report.sampled:
        print(f"  note: the entry's num_samples makes LLaMA-Factory draw {report.sampled} row(s) from these"
              + (" (with repeats)" if report.sampled > report.usable else ""))
    if report.usable == 0:
        print("  no usable row: LLaMA-Factory stops with \"Cannot find valid samples\"")
        if report.hint:
            print(f"  {report.hint}")
        return 1
    return 1 if report.bad else 0

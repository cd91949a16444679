"""`llf-recipes register`: write complete entries into a data dir's dataset_info.json, safely."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from llf_recipes.cli.common import add_catalog_args, add_verb, catalog_from
from llf_recipes.data.layouts import FORMATTINGS, STAGES, local_dir
from llf_recipes.data.registry import INFO_NAME, parse_columns, register
from llf_recipes.errors import LlfError


def add_parser(sub) -> None:
    p = add_verb(sub, "register", "register dataset entries in DATA_DIR/dataset_info.json (created if absent)", """
        llf-recipes register huanhuan zhihu_rlhf zhihu_sft --data-dir data
        llf-recipes register --all --data-dir data --dry-run
        llf-recipes register --file chats.json --name chats --stage sft      # layout detected, whole file checked
        llf-recipes register --file my_qa.jsonl --name my_qa --stage sft --columns prompt=question,response=answer
        llf-recipes register --file prefs.jsonl --name my_prefs --stage dpo --force   # replace a different definition
        llf-recipes register --file pics.json --name pics --stage sft --media-dir shared   # image paths relative to shared/
    """)
    p.add_argument("names", nargs="*", metavar="NAME", help="dataset entries from dataset_info.d/")
    p.add_argument("--all", action="store_true", help="every entry in dataset_info.d/")
    p.add_argument("--data-dir", default="data", metavar="DIR", help="LLaMA-Factory's dataset_dir (default: data)")
    p.add_argument("--file", metavar="FILE", help="register your own data file or folder (json, jsonl, parquet, csv, "
                                                 "arrow, txt): its layout is detected and every row checked first")
    p.add_argument("--name", help="with --file: the dataset name recipes will use")
    p.add_argument("--stage", choices=STAGES, help="with --file: the stage it feeds (sets ranking and the columns it needs)")
    p.add_argument("--columns", metavar="COL=FIELD,...", help="with --file: map LLaMA-Factory columns to your fields "
                                                              "(overrides detection)")
    p.add_argument("--tags", metavar="TAG=VALUE,...", help="with --file: sharegpt tags, e.g. role_tag=role,user_tag=user "
                                                           "(overrides detection)")
    p.add_argument("--formatting", choices=FORMATTINGS, help="with --file: override the detected formatting")
    p.add_argument("--media-dir", metavar="DIR", help="with --file: LLaMA-Factory's media_dir, the folder the rows' image, "
                                                     "video and audio paths are relative to (default: the data dir)")
    p.add_argument("--skip-bad", action="store_true",
                   help="with --file: register it even when LLaMA-Factory will drop some rows (a wrong turn order, no "
                        "answer): they are listed and left in the file, and it skips them as it loads; rows it would "
                        "stop on still refuse the file")
    p.add_argument("--force", action="store_true", help="replace a name registered with a different definition")
    p.add_argument("--dry-run", action="store_true", help="print the change; write nothing")
    add_catalog_args(p)
    p.set_defaults(func=main)


def _user_file_path(file: Path, data_dir: Path) -> str:
    """Relative to the data dir when inside it (portable), else absolute (resolves wherever LLaMA-Factory runs)."""
    resolved = file.resolve()
    try:
        return resolved.relative_to(data_dir.resolve()).as_posix()
    except ValueError:
        return str(resolved)


def entries_from(args) -> dict[str, dict]:
    data_dir = local_dir(args.data_dir, "register")
    if args.file:
        from llf_recipes.data.userdata import verified_entry

        if args.names or args.all:
            raise LlfError("--file registers one file: give it with --name and --stage, without NAME arguments")
        if not args.name or not args.stage:
            raise LlfError("--file needs --name and --stage", fix="e.g. --file my.jsonl --name my_sft --stage sft")
        file = Path(args.file)
        if not file.exists():
            raise LlfError(f"{file} does not exist", key="--file")
        entry, found, report = verified_entry(file, args.stage, _user_file_path(file, data_dir), data_dir, name=args.name,
                                              formatting=args.formatting, columns=parse_columns(args.columns),
                                              tags=parse_columns(args.tags, "--tags"), media_dir=args.media_dir,
                                              skip_dropped=args.skip_bad)
        print(f"{file}: {found.layout}; {report.usable} of {report.rows} row(s) usable for stage {args.stage}")
        if os.path.isabs(entry["file_name"]):
            print(f"  note: the file lies outside {data_dir}, so its file_name is the absolute path {entry['file_name']} "
                  f"(the entry works from any folder but does not move with {data_dir}; copy the file into it for a "
                  "relative one)", file=sys.stderr)
        if report.usable < report.rows:
            print(f"  note: {report.rows - report.usable} row(s) stay in the file and LLaMA-Factory drops them as it "
                  "loads it, e.g. " + "; ".join(f"{d.where}: {d.message.removeprefix('LLaMA-Factory drops it: ')}"
                                                for d in report.dropped[:3]), file=sys.stderr)
        if args.media_dir and any(k in entry.get("columns", {}) for k in ("images", "videos", "audios")):
            print(f"  note: train with media_dir: {args.media_dir} (LLaMA-Factory looks for the media files there; its "
                  "default is dataset_dir)", file=sys.stderr)
        for warn in report.warnings[:3]:
            print(f"  note: {warn.where}: {warn.message}", file=sys.stderr)
        return {args.name: entry}
    for option in ("name", "stage", "columns", "tags", "formatting", "media_dir", "skip_bad"):
        if getattr(args, option):
            raise LlfError(f"--{option.replace('_', '-')} goes with --file", key=f"--{option.replace('_', '-')}")
    catalog = catalog_from(args)
    names = list(catalog.datasets) if args.all else args.names
    if not names:
        raise LlfError("nothing to register", fix="name entries (see `llf-recipes list --datasets`), pass --all, or use --file")
    return {name: catalog.dataset(name).entry for name in names}


def main(args) -> int:
    from llf_recipes import paths

    paths.directory(args.data_dir)
    if args.file:
        paths.input_file(args.file, "--file")
    if args.media_dir is not None and not Path(args.media_dir).is_dir():
        raise LlfError(f"the media folder {args.media_dir} does not exist", key="--media-dir")
    entries = entries_from(args)
    changes = register(args.data_dir, entries, force=args.force, dry_run=args.dry_run)
    target = Path(args.data_dir) / INFO_NAME
    for c in changes:
        print(f"{'would be ' if args.dry_run and c.action != 'unchanged' else ''}{c.action}: {c.name}")
        if args.dry_run and (c.action != "unchanged" or args.file):
            print(json.dumps({c.name: c.new}, indent=2, ensure_ascii=False))
        file_name = c.new.get("file_name", "")
        if file_name and not os.path.isabs(file_name) and not (Path(args.data_dir) / file_name).exists():
            print(f"  note: {Path(args.data_dir) / file_name} is not there yet; convert the data into it before training",
                  file=sys.stderr)
    if not args.dry_run:
        written = sum(c.action != "unchanged" for c in changes)
        print(f"{target}: {written} {'entry' if written == 1 else 'entries'} written" if written
              else f"{target}: unchanged, every entry was already registered as given")
    return 0

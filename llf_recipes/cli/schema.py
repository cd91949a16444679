"""`llf-recipes schema`: a JSON Schema of LLaMA-Factory's config keys, for editors that check YAML as it is typed."""

from __future__ import annotations

import json
import sys

from llf_recipes.cli.verb import add_verb
from llf_recipes.errors import LlfError


def add_parser(sub) -> None:
    p = add_verb(sub, "schema", "write a JSON Schema of LLaMA-Factory 0.9.5's config keys (for editor completion)", """
        llf-recipes schema -o .llf-train.schema.json              # then, on line 1 of a training YAML:
            # yaml-language-server: $schema=.llf-train.schema.json
        llf-recipes schema --verb chat -o .llf-chat.schema.json   # chat, api and export share one key set
        llf-recipes schema | jq '.properties.lora_target'
    """)
    p.add_argument("--verb", choices=("train", "chat", "export", "api"), default="train",
                   help="the llamafactory-cli verb whose keys to describe (default: train)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the schema to FILE (default: standard output)")
    p.set_defaults(func=main)


def main(args) -> int:
    from llf_recipes.atomic import write_text
    from llf_recipes.schema.jsonschema import build_schema

    schema = build_schema(args.verb)
    text = json.dumps(schema, indent=1, ensure_ascii=False) + "\n"
    if not args.output:
        sys.stdout.write(text)
        return 0
    from pathlib import Path

    folder = Path(args.output).parent
    if not (folder.exists() or folder.is_symlink()):  # a schema goes beside the configs it describes: a missing folder is a mistyped path
        raise LlfError(f"the folder {folder} does not exist", where=args.output, key="-o",
                       fix=f"create it first (mkdir -p {folder}), or choose a path in an existing folder")
    try:
        path = write_text(args.output, text)
    except OSError as exc:
        raise LlfError(f"cannot write the schema: {exc.strerror or exc}", where=args.output,
                       fix="choose a writable path with -o") from None
    print(f"wrote {path} ({len(schema['properties'])} keys of llamafactory-cli {args.verb}); add to a YAML's first line:\n"
          f"  # yaml-language-server: $schema={args.output}")
    return 0

"""`llf-recipes download`: fetch a dataset's raw data files into the Hugging Face or ModelScope cache."""

from __future__ import annotations

import sys

from llf_recipes.catalog import Catalog
from llf_recipes.cli.common import add_verb
from llf_recipes.data.download import HUBS, download


def add_parser(sub) -> None:
    p = add_verb(sub, "download", "download a dataset's data files from its hub into the hub's own cache", """
        llf-recipes download zhihu_rlhf                      # entry name; prints the snapshot and its data files
        llf-recipes download ultrafeedback                   # or a fragment name from dataset_info.d/
        llf-recipes download belle_0.5m --hub modelscope     # the source lists both hubs; default: huggingface
        llf-recipes download huanhuan --cache-dir /data/ms-cache
        HF_ENDPOINT=https://hf-mirror.com llf-recipes download zhihu_rlhf     # through a mirror
        HF_HUB_OFFLINE=1 llf-recipes download zhihu_rlhf     # no network: the cached copy, or an error
    """)
    p.add_argument("name", metavar="NAME", help="dataset entry or fragment name from dataset_info.d/")
    p.add_argument("--hub", choices=sorted(HUBS),
                   help="which hub when the source lists both (default: hf; modelscope when USE_MODELSCOPE_HUB=1)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="the hub cache to use (default: HF_HUB_CACHE under HF_HOME, or MODELSCOPE_CACHE)")
    p.add_argument("--revision", metavar="REV",
                   help="branch, tag or commit (default: main on Hugging Face, master on ModelScope)")
    p.epilog += ("\n\nHF_TOKEN / MODELSCOPE_API_TOKEN authenticate; HF_HUB_OFFLINE=1 keeps both hubs off the network."
                 "\nRun an interrupted download again: finished files are kept, ModelScope resumes partial ones.")
    p.set_defaults(func=main)


def main(args) -> int:
    try:
        result = download(args.name, hub=args.hub, cache_dir=args.cache_dir, revision=args.revision,
                          catalog=Catalog.discover())
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume; finished files are kept", file=sys.stderr)
        return 130
    print(f"{result.hub}:{result.repo}" + (f"@{result.revision}" if result.revision else ""))
    print(f"snapshot  {result.snapshot}")
    for f in result.files:
        print(f"data      {f}")
    if result.note:
        print(f"note: {result.note}", file=sys.stderr)
    return 0

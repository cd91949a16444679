"""Where `generate` reads prompts from: datasets registered in a data directory, or one JSON/JSON-lines file given by
path, whose layout (alpaca, sharegpt, preference pairs...) is detected from its rows and read through a temporary
dataset_info.json entry, so LLaMA-Factory's own loader aligns it exactly as it aligns a registered dataset."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from llf_recipes.errors import LlfError

FILE_SUFFIXES = (".json", ".jsonl")


def is_data_file(name: str) -> bool:
    """A dataset argument that names a file (by its suffix, or because the file is there) rather than an entry."""
    return Path(name).suffix.lower() in FILE_SUFFIXES or ("/" in name and Path(name).is_file())


@contextlib.contextmanager
def prompt_source(datasets: list[str], data_dir: str | None) -> Iterator[tuple[list[str], str | None]]:
    """(names, data directory) LLaMA-Factory reads the prompts from: `datasets` and `data_dir` as given, or for one
    file a temporary directory whose dataset_info.json describes it."""
    files = [d for d in datasets if is_data_file(d)]
    if not files:
        yield datasets, data_dir
        return
    if len(datasets) > 1:
        raise LlfError(f"--dataset {','.join(datasets)}: a file is read alone, not with other datasets",
                       key="--dataset", fix="pass either registered names (NAME,NAME) or one file")
    path = Path(files[0])
    if not path.is_file():
        raise LlfError(f"no such file: {path}", key="--dataset",
                       fix="pass a JSON or JSON-lines file of prompts, or a dataset name registered in --data-dir")
    from llf_recipes.data.userdata import detect_entry, first_rows, verified_entry

    rows = first_rows(path)  # read once: whether the rows are pairs, then their layout for that reading
    entry, _found = detect_entry(path, None, str(path.resolve()), rows=rows)
    # every row as LLaMA-Factory reads prompts (ppo's reading) or pairs: a row it would stop on is named, with its line
    stage = "dpo" if entry.get("ranking") else "ppo"
    entry, _found, _report = verified_entry(path, stage, str(path.resolve()), path.parent, name=path.name, rows=rows,
                                            outcome="generated")
    name = "prompts"
    with tempfile.TemporaryDirectory(prefix="llf-generate-") as tmp:
        Path(tmp, "dataset_info.json").write_text(json.dumps({name: entry}), encoding="utf-8")
        yield [name], tmp

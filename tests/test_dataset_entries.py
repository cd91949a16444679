"""The bundled dataset entries as LLaMA-Factory 0.9.5 reads them.

DatasetAttr.join sets every column (tag) from a `columns` (`tags`) block, so a block that names only some of them
resets the others to None, defaults included: each block must name every field its format uses.
"""

import ast
import importlib.util
import json
from pathlib import Path

import pytest

from llf_recipes.data.registry import ALL_COLUMNS

TAGS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")
# The fields each format reads (LLaMA-Factory's data/README.md and its converters), beyond the preference columns.
USED = {"alpaca": ("prompt", "query", "response", "history", "system"), "sharegpt": ("messages", "system", "tools")}


def used_columns(entry):
    used = set(USED[entry.get("formatting", "alpaca")])
    if entry.get("ranking"):  # pairs answer with chosen/rejected instead of response
        used = (used - {"response"}) | {"chosen", "rejected"}
    return used


def llamafactory_join_lists():
    """The column and tag names DatasetAttr.join sets, read from the installed source without importing it."""
    spec = importlib.util.find_spec("llamafactory")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llamafactory is not installed (the train extra)")
    source = Path(next(iter(spec.submodule_search_locations))) / "data" / "parser.py"
    names: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Assign, ast.AugAssign)) and isinstance(node.value, ast.List):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name):
                names.setdefault(target.id, []).extend(elt.value for elt in node.value.elts)
    return names["column_names"], names["tag_names"]


def test_the_field_lists_match_llamafactory():
    columns, tags = llamafactory_join_lists()
    assert tuple(columns) == ALL_COLUMNS and tuple(tags) == TAGS


def test_every_entry_names_the_fields_its_format_uses(catalog):
    problems = []
    for name, ds in catalog.datasets.items():
        entry = ds.entry
        columns = entry.get("columns", {})
        if missing := used_columns(entry) - set(columns):
            problems.append(f"{name}: columns lacks {sorted(missing)}")
        if unknown := set(columns) - set(ALL_COLUMNS):
            problems.append(f"{name}: unknown columns {sorted(unknown)}")
        if entry.get("formatting") == "sharegpt":
            tags = entry.get("tags", {})
            if set(tags) != set(TAGS) or not all(isinstance(v, str) and v for v in tags.values()):
                problems.append(f"{name}: tags must name all of {TAGS}, got {tags}")
    assert not problems, "\n".join(problems)


def test_sharegpt_entries_exist_and_their_rows_use_their_tags(catalog, cli, tmp_path):
    sharegpt = [name for name, ds in catalog.datasets.items() if ds.entry.get("formatting") == "sharegpt"]
    assert "gsm8k_grpo" in sharegpt
    for name in sharegpt:
        entry = catalog.dataset(name).entry
        code, _, err = cli("prepare", name, "--sample", "--data-dir", tmp_path)
        assert code == 0, err
        tags = entry["tags"]
        roles = {tags["user_tag"], tags["assistant_tag"], tags["system_tag"], tags["observation_tag"],
                 tags["function_tag"]}
        rows = [json.loads(line) for line in (tmp_path / entry["file_name"]).read_text(encoding="utf-8").splitlines()]
        assert rows
        for row in rows:
            messages = row[entry["columns"]["messages"]]
            assert messages and all(set(m) == {tags["role_tag"], tags["content_tag"]} for m in messages), messages
            assert {m[tags["role_tag"]] for m in messages} <= roles

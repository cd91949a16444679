"""Random rows in each formatting, with every oddity LLaMA-Factory tolerates or drops (wrong roles, odd turn counts,
missing fields, non-boolean kto tags, missing pairs): `check` counts exactly the rows LLaMA-Factory's get_dataset keeps,
and where it says a row stops LLaMA-Factory, get_dataset raises."""

import json
import random
import re

import pytest

pytestmark = pytest.mark.engine
ROLES = ["human", "gpt", "observation", "function_call", "system", "bot"]


CALL = json.dumps({"name": "f", "arguments": {"x": 1}})


def sharegpt_row(rng, ranking, kto):
    roles = [rng.choice(ROLES[:5] if rng.random() < 0.9 else ROLES) for _ in range(rng.choice([0, 1, 2, 2, 2, 3, 4, 5]))]
    turns = [{"from": r, "value": CALL if r == "function_call" else f"t{i}"} for i, r in enumerate(roles)]
    if rng.random() < 0.5:  # mostly well-formed conversations
        n = rng.choice([1, 3]) if ranking else rng.choice([2, 4])
        turns = [{"from": ("human", "gpt")[i % 2], "value": f"w{i}"} for i in range(n)]
    row = {"conversations": turns, "system": rng.choice([None, "", "be kind"])}
    if ranking:
        pick = lambda: rng.choice([None, {"from": "gpt", "value": "c"}, {"from": "gpt", "value": "c"}])
        row.update(chosen=pick(), rejected=pick())
    if kto:
        row["label"] = rng.choice([True, False, None])
    return row


def alpaca_row(rng, ranking, kto):
    text = lambda: rng.choice([None, "", "x", "some text"])
    row = {"instruction": text(), "input": text(), "output": text()}
    if ranking:
        row.update(chosen=text(), rejected=text())
    if kto:
        row["label"] = rng.choice([True, False, None])
    if rng.random() < 0.3:
        row["history"] = [["h", "a"]] if rng.random() < 0.7 else []
    return row


CASES = [("sharegpt", "sft"), ("sharegpt", "dpo"), ("sharegpt", "kto"), ("sharegpt", "ppo"),
         ("alpaca", "sft"), ("alpaca", "dpo"), ("alpaca", "kto"), ("alpaca", "ppo"), ("alpaca", "pt")]


@pytest.mark.parametrize("seed", [1, 2])
def test_check_counts_what_llamafactory_keeps(cli, tiny_model, tmp_path, seed):
    from llf_loader import loaded_rows

    rng = random.Random(seed)
    info = {}
    for formatting, stage in CASES:
        ranking, kto = stage == "dpo", stage == "kto"
        make = sharegpt_row if formatting == "sharegpt" else alpaca_row
        rows = [make(rng, ranking, kto) for _ in range(40)]
        name = f"{formatting}_{stage}"
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        columns = ({"messages": "conversations", "system": "system"} if formatting == "sharegpt" else
                   {"prompt": "instruction", "query": "input", "response": "output", "history": "history"})
        if ranking:
            columns.update(chosen="chosen", rejected="rejected")
        if kto:
            columns["kto_tag"] = "label"
        info[name] = {"file_name": f"{name}.jsonl", "formatting": formatting, "ranking": ranking, "columns": columns}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    stopped = []
    for formatting, stage in CASES:
        name = f"{formatting}_{stage}"
        _, out, _ = cli("check", name, "--stage", stage, "--data-dir", tmp_path)
        counted = int(re.search(r"(\d+) usable for stage", out).group(1))
        if "that stop LLaMA-Factory" in out:
            stopped.append(name)
            with pytest.raises((IndexError, RuntimeError, ValueError)):
                loaded_rows(tiny_model, tmp_path, name, stage, tmp_path / "w" / name)
        else:
            assert loaded_rows(tiny_model, tmp_path, name, stage, tmp_path / "w" / name) == counted, (name, out)
    assert len(stopped) < len(CASES) // 2, stopped  # most cases compare counts


def test_a_function_call_that_is_not_json_stops_both(cli, tiny_model, tmp_path):
    from llf_loader import loaded_rows

    turns = [{"from": "human", "value": "q"}, {"from": "function_call", "value": "not json"},
             {"from": "observation", "value": "{}"}, {"from": "gpt", "value": "a"}]
    (tmp_path / "calls.jsonl").write_text(json.dumps({"conversations": turns}) + "\n")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"calls": {"file_name": "calls.jsonl", "formatting": "sharegpt"}}))
    code, out, _ = cli("check", "calls", "--stage", "sft", "--data-dir", tmp_path)
    assert code == 1 and "1 that stop LLaMA-Factory" in out and "calls.jsonl:1: turn 1 is a function call" in out
    with pytest.raises(RuntimeError, match="Invalid JSON format in function message"):
        loaded_rows(tiny_model, tmp_path, "calls", "sft", tmp_path / "w")

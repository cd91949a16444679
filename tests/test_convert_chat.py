"""convert between chat layouts: message lists <-> alpaca, OpenAI tool calls -> sharegpt. Odd turn orders are errors
(or rejects with --skip-bad) naming line and field; what converts reads in LLaMA-Factory as the source meant."""

import json
from pathlib import Path

import pytest

LAYOUTS = Path(__file__).parent / "data" / "layouts"


def rows(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def msgs(*turns):
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


GOOD = msgs(("user", "q"), ("assistant", "a"))


@pytest.mark.parametrize("row, words", [
    (msgs(("user", "q"), ("user", "again"), ("assistant", "a")), "turn 1: two user turns in a row"),
    (msgs(("user", "q"), ("assistant", "a"), ("assistant", "more")), "turn 2: two assistant turns in a row"),
    (msgs(("assistant", "hello"), ("user", "q")), "turn 0: an assistant turn where a user turn belongs"),
    (msgs(("user", "q"), ("system", "late"), ("assistant", "a")), "a system message after the first turn"),
    (msgs(("user", "q"), ("bot", "a")), "role 'bot' is not one of"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}, "content must be text, got int"),
    (msgs(("user", "q")), "ends with a user turn that has no answer"),
    (msgs(("user", "q"), ("tool", "{}"), ("assistant", "a")), "is a tool observation"),
    ({"messages": []}, "must be a non-empty list"),
])
def test_messages_to_alpaca_refuses_odd_orders(cli, tmp_path, row, words):
    src = tmp_path / "m.jsonl"
    src.write_text(json.dumps(GOOD) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    out = tmp_path / "o" / "a.jsonl"
    code, _, err = cli("convert", src, "--kind", "messages_to_alpaca", "-o", out)
    assert code == 2 and "m.jsonl:2" in err and "'messages'" in err and words in err, err
    assert not out.parent.exists() or not list(out.parent.iterdir())
    code, _, err = cli("convert", src, "--kind", "messages_to_alpaca", "-o", out, "--skip-bad")
    assert code == 0 and rows(out) == [{"instruction": "q", "input": "", "output": "a"}]
    assert rows(str(out) + ".rejects.jsonl")[0]["where"].endswith("m.jsonl:2")


def test_messages_to_alpaca_keeps_history_and_system(cli, tmp_path):
    src = tmp_path / "m.jsonl"
    row = msgs(("system", "s"), ("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"))
    src.write_text(json.dumps(row) + "\n" + json.dumps(msgs(("user", "p"))) + "\n")
    code, _, err = cli("convert", src, "--kind", "messages_to_alpaca", "-o", tmp_path / "a.jsonl", "--option", "prompt_only=true")
    assert code == 0, err
    assert rows(tmp_path / "a.jsonl") == [
        {"instruction": "q2", "input": "", "output": "a2", "history": [["q1", "a1"]], "system": "s"},
        {"instruction": "p", "input": "", "output": ""}]


def test_output_equal_to_input_is_refused(cli, tmp_path):
    src = tmp_path / "m.jsonl"
    src.write_text(json.dumps(GOOD) + "\n")
    before = src.read_bytes()
    code, _, err = cli("convert", src, "--kind", "messages_to_alpaca", "-o", src)
    assert code == 2 and "is the input" in err and src.read_bytes() == before
    code, _, err = cli("convert", src, "--kind", "messages_to_alpaca", "--data-dir", tmp_path)  # default output: same path
    assert code == 2 and "is the input" in err and src.read_bytes() == before


@pytest.mark.parametrize("name, content, words", [
    ("p.parquet", b"PAR1 broken", "cannot read it as parquet"),
    ("p.arrow", b"broken", "cannot read it as arrow"),
    ("c.csv", b'instruction,output\n"open quote,b\n', "c.csv:2: cannot read it as CSV"),
])
def test_unreadable_sources_are_one_line_errors(cli, tmp_path, name, content, words):
    (tmp_path / name).write_bytes(content)
    code, _, err = cli("convert", tmp_path / name, "--kind", "alpaca", "-o", tmp_path / "out.jsonl")
    assert code == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "out.jsonl").exists()


def test_round_trips_register_and_check(cli, tmp_path):
    """Each conversion's output registers by itself (layout detected) and every row is usable."""
    for src, kind, stage, layout in [
        ("openai_tools.jsonl", "openai_to_sharegpt", "sft", "sharegpt (from/value)"),
        ("alpaca_sft.json", "alpaca_to_sharegpt", "sft", "sharegpt (from/value)"),
        ("alpaca_pairs.jsonl", "alpaca_to_sharegpt", "dpo", "sharegpt (from/value), preference pairs"),
        ("alpaca_kto.jsonl", "alpaca_to_sharegpt", "kto", "sharegpt (from/value), kto (label)"),
        ("openai_sft.jsonl", "messages_to_alpaca", "sft", "alpaca"),
    ]:
        out = tmp_path / f"{kind}_{stage}.jsonl"
        assert cli("convert", LAYOUTS / src, "--kind", kind, "-o", out)[0] == 0
        code, text, err = cli("register", "--file", out, "--name", out.stem, "--stage", stage, "--data-dir", tmp_path)
        assert code == 0 and layout in text and f"{len(rows(out))} of {len(rows(out))} row(s) usable" in text, (src, text, err)
    tools = rows(tmp_path / "openai_to_sharegpt_sft.jsonl")
    assert [t["from"] for t in tools[0]["conversations"]] == ["system", "human", "function_call", "observation", "gpt"]
    assert json.loads(tools[0]["conversations"][2]["value"])[1] == {"name": "get_weather", "arguments": {"city": "Quito"}}
    assert json.loads(tools[0]["conversations"][3]["value"]) == [{"temp_c": 19}, {"temp_c": 13}]
    assert json.loads(tools[0]["tools"])[0]["name"] == "get_weather"
    sg = rows(tmp_path / "alpaca_to_sharegpt_sft.jsonl")
    back = tmp_path / "back.jsonl"
    assert cli("convert", tmp_path / "alpaca_to_sharegpt_sft.jsonl", "--kind", "sharegpt_to_alpaca", "-o", back)[0] == 0
    original = json.loads((LAYOUTS / "alpaca_sft.json").read_text())
    assert [r["output"] for r in rows(back)] == [r["output"] for r in original] and len(sg) == len(original)


@pytest.mark.engine
def test_llamafactory_reads_converted_rows_as_the_source(cli, tmp_path):
    """alpaca -> sharegpt: LLaMA-Factory's converter gives the same prompt, response and system for both entries."""
    from llf_loader import aligned_rows

    for src, stage in [("alpaca_sft.json", "sft"), ("alpaca_pairs.jsonl", "dpo"), ("alpaca_kto.jsonl", "kto")]:
        d = tmp_path / stage
        d.mkdir()
        (d / src).write_bytes((LAYOUTS / src).read_bytes())
        assert cli("register", "--file", d / src, "--name", "a", "--stage", stage, "--data-dir", d)[0] == 0
        assert cli("convert", d / src, "--kind", "alpaca_to_sharegpt", "-o", d / "s.jsonl")[0] == 0
        assert cli("register", "--file", d / "s.jsonl", "--name", "s", "--stage", stage, "--data-dir", d)[0] == 0
        a, s = aligned_rows(d, "a", stage, d / "wa"), aligned_rows(d, "s", stage, d / "ws")
        assert len(a) == len(s) > 0
        for x, y in zip(a, s, strict=True):
            assert (x["_prompt"], x["_response"], x["_system"] or "") == (y["_prompt"], y["_response"], y["_system"] or ""), src


def test_a_folder_converts_like_one_file(cli, tmp_path):
    (tmp_path / "in").mkdir()
    for part in ("a", "b"):
        (tmp_path / "in" / f"{part}.jsonl").write_bytes((LAYOUTS / "openai_sft.jsonl").read_bytes())
    code, out, err = cli("convert", tmp_path / "in", "--kind", "messages_to_alpaca", "-o", tmp_path / "out.jsonl")
    assert code == 0 and "8 row(s) read, 8 written" in out, err
    (tmp_path / "in" / "c.json").write_text("[]")
    code, _, err = cli("convert", tmp_path / "in", "--kind", "messages_to_alpaca", "-o", tmp_path / "out2.jsonl")
    assert code == 2 and "files of one type" in err and not (tmp_path / "out2.jsonl").exists()


def test_messages_to_alpaca_keeps_the_kto_label(cli, tmp_path):
    """A kto row's true/false label stays with its answer: without it the undesirable answers would become sft targets."""
    out = tmp_path / "k.jsonl"
    code, _, err = cli("convert", LAYOUTS / "sharegpt_kto.json", "--kind", "messages_to_alpaca", "-o", out)
    assert code == 0, err
    source = json.loads((LAYOUTS / "sharegpt_kto.json").read_text(encoding="utf-8"))
    assert [r["label"] for r in rows(out)] == [r["label"] for r in source] == [True, False, True, False]
    code, text, err = cli("register", "--file", out, "--name", "k", "--stage", "kto", "--data-dir", tmp_path)
    assert code == 0 and "kto (label)" in text and "4 of 4 row(s) usable" in text, text + err


@pytest.mark.parametrize("src", ["sharegpt_pairs.json", "chat_pairs.jsonl"])
def test_sharegpt_preference_rows_convert(cli, tmp_path, src):
    """LLaMA-Factory's own preference layout (chosen/rejected one message each): earlier turns become history, a
    leading system turn the system column."""
    source = [json.loads(x) for x in (LAYOUTS / src).read_text(encoding="utf-8").splitlines()] if src.endswith("l") \
        else json.loads((LAYOUTS / src).read_text(encoding="utf-8"))
    for kind, per_row in [("pairs", 1), ("pairs_to_sft", 1), ("pairs_to_kto", 2), ("messages_to_alpaca", 1)]:
        out = tmp_path / f"{kind}.jsonl"
        code, text, err = cli("convert", LAYOUTS / src, "--kind", kind, "-o", out)
        assert code == 0 and f"{len(source)} row(s) read, {per_row * len(source)} written" in text, (kind, err)
    pairs = rows(tmp_path / "pairs.jsonl")
    assert rows(tmp_path / "messages_to_alpaca.jsonl") == pairs
    last = {"chat_pairs.jsonl": "Capital of Peru?", "sharegpt_pairs.json": "And of Italy?"}[src]
    multi = next(p for p in pairs if p["instruction"] == last)
    assert multi["history"] == [["Hi", "Hello."]] if src == "chat_pairs.jsonl" else [["Capital of Japan?", "Tokyo."]]
    assert [p.get("system") for p in pairs][:1] == (["Answer in one word."] if src == "chat_pairs.jsonl" else [None])
    assert [r["label"] for r in rows(tmp_path / "pairs_to_kto.jsonl")][:2] == [True, False]


@pytest.mark.parametrize("row, words", [
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
      "chosen": {"from": "gpt", "value": "g"}, "rejected": {"from": "gpt", "value": "b"}}, "ends with an assistant turn"),
    ({"conversations": [{"from": "human", "value": "q"}],
      "chosen": {"from": "human", "value": "g"}, "rejected": {"from": "gpt", "value": "b"}}, "'chosen' must be one assistant message"),
    ({"chosen": {"from": "gpt", "value": "g"}, "rejected": {"from": "gpt", "value": "b"}}, "no 'messages' or 'conversations' list"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}],
      "chosen": {"from": "gpt", "value": "g"}, "rejected": {"from": "gpt", "value": "b"}}, "ends with an assistant turn"),
    ({"conversations": [{"from": "human", "value": "q"}],
      "chosen": {"from": ["gpt"], "value": "g"}, "rejected": {"from": "gpt", "value": "b"}}, "'chosen' must be one assistant"),
])
def test_bad_sharegpt_preference_rows_are_named(cli, tmp_path, row, words):
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps(row) + "\n", encoding="utf-8")
    code, _, err = cli("convert", src, "--kind", "pairs", "-o", tmp_path / "o.jsonl")
    assert code == 2 and "p.jsonl:1" in err and words in err, err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.engine
def test_llamafactory_reads_converted_preference_and_kto_rows_as_the_source(cli, tmp_path):
    """LLaMA-Factory's converter gives the converted rows the prompt, answers and system of the source rows, read
    through its own sharegpt preference and kto entries."""
    from llf_loader import aligned_rows

    def same(x):
        return x["_prompt"], x["_response"], x["_system"] or ""

    for src, stage, kind in [("sharegpt_pairs.json", "dpo", "pairs"), ("chat_pairs.jsonl", "dpo", "pairs"),
                             ("chat_pairs.jsonl", "dpo", "messages_to_alpaca"),
                             ("sharegpt_kto.json", "kto", "messages_to_alpaca")]:
        d = tmp_path / f"{src}-{kind}"
        d.mkdir()
        (d / src).write_bytes((LAYOUTS / src).read_bytes())
        assert cli("register", "--file", d / src, "--name", "s", "--stage", stage, "--data-dir", d)[0] == 0
        assert cli("convert", d / src, "--kind", kind, "-o", d / "a.jsonl")[0] == 0
        assert cli("register", "--file", d / "a.jsonl", "--name", "a", "--stage", stage, "--data-dir", d)[0] == 0
        s, a = aligned_rows(d, "s", stage, d / "ws"), aligned_rows(d, "a", stage, d / "wa")
        assert len(s) == len(a) > 0 and [same(x) for x in s] == [same(x) for x in a], (src, kind)
        if kind == "pairs":  # its sft side trains on the chosen answer of the same prompt
            assert cli("convert", d / src, "--kind", "pairs_to_sft", "-o", d / "t.jsonl")[0] == 0
            assert cli("register", "--file", d / "t.jsonl", "--name", "t", "--stage", "sft", "--data-dir", d)[0] == 0
            t = aligned_rows(d, "t", "sft", d / "wt")
            assert [(x["_prompt"], x["_response"][:1]) for x in s] == [(y["_prompt"], y["_response"]) for y in t]


@pytest.mark.parametrize("name", ["label", "kto_tag", "tag", "images"])
def test_alpaca_and_messages_conversions_keep_the_same_extra_fields(name):
    """A field beside the text is kept or dropped alike by both conversions to alpaca: a kto tag when true/false, media
    when there are any."""
    from llf_recipes.data.convert import CONVERTERS

    for value in (True, False, "yes", 1, None, "", [], ["a.png"]):
        alpaca = {"instruction": "q", "input": "", "output": "a", name: value}
        messages = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], name: value}
        (one,) = CONVERTERS["alpaca"](alpaca, "x:1")
        (other,) = CONVERTERS["messages_to_alpaca"](messages, "x:1")
        assert one == other, (name, value, one, other)
        kept = isinstance(value, bool) or (name == "images" and bool(value))
        assert (name in one) == kept and one.get(name, value) == value

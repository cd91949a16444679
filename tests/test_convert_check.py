import json

import pytest

from llf_recipes.data.convert import normalize_pair


def rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_convert_bundled_samples(cli, tmp_path):
    for name, count in [("huanhuan", 40), ("zhihu_sft", 30), ("zhihu_rlhf", 30), ("ultrafeedback_kto", 60),
                        ("ultrafeedback_prefs", 30), ("belle_0.5m", 40)]:
        code, _, err = cli("convert", name, "--sample", "--data-dir", tmp_path)
        assert code == 0, err
        assert len(rows(tmp_path / f"{name}.jsonl")) == count
    kto = rows(tmp_path / "ultrafeedback_kto.jsonl")
    assert [r["label"] for r in kto[:2]] == [True, False] and kto[0]["instruction"] == kto[1]["instruction"]
    sft = rows(tmp_path / "zhihu_sft.jsonl")
    src = rows(__import__("conftest").SAMPLES / "zhihu_rlhf.jsonl")
    assert sft[0] == {"instruction": src[0]["prompt"], "input": "", "output": src[0]["chosen"]}


def test_preference_layouts_are_normalized():
    msgs = lambda a: [{"role": "user", "content": "q"}, {"role": "assistant", "content": a}]
    for row in ({"prompt": "q", "chosen": "g", "rejected": "b"},
                {"question": "q", "better_response": "g", "worse_response": "b"},
                {"question": "q", "response_j": "g", "response_k": "b"},
                {"chosen": msgs("g"), "rejected": msgs("b")}):
        assert normalize_pair(row, "x:1") == {"prompt": "q", "chosen": "g", "rejected": "b"}


@pytest.mark.parametrize("content, where, words", [
    (b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "chosen": "a"}\n', ":2", "no preference pair"),
    (b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": 3, "chosen": "a", "rejected": "b"}\n', ":2", "no prompt"),
    (b'{"prompt": "q", "chosen": "a", "rejected": ""}\n', ":1", "'rejected' is empty"),
    (b'{"prompt": "q", "chosen": "a", "rejected": "b"}\nnot json\n', ":2", "invalid JSON"),
    (b'{"prompt": "q", "chosen": "\xff", "rejected": "b"}\n', ":1", "invalid UTF-8"),
    (b'["a list"]\n', ":1", "expected a JSON object"),
    (b'\xef\xbb\xbf{"prompt": "q", "chosen": "a", "rejected": "b"}\n', ":1", "byte-order mark"),
    (b"", "", "is empty"),
])
def test_bad_input_names_line_and_writes_nothing(cli, tmp_path, content, where, words):
    src = tmp_path / "in.jsonl"
    src.write_bytes(content)
    out = tmp_path / "out" / "pairs.jsonl"
    code, _, err = cli("convert", src, "--kind", "pairs", "-o", out)
    assert code == 2 and f"in.jsonl{where}" in err and words in err
    assert not out.exists()
    assert not out.parent.exists() or not list(out.parent.iterdir())  # no temporary file left either


def test_skip_bad_sets_rejects_aside(cli, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q"}\n{oops\n', encoding="utf-8")
    code, _, err = cli("convert", src, "--kind", "pairs", "-o", tmp_path / "o.jsonl", "--skip-bad")
    assert code == 0 and "2 bad row(s)" in err
    assert len(rows(tmp_path / "o.jsonl")) == 1
    rejects = rows(tmp_path / "o.jsonl.rejects.jsonl")
    assert [r["where"].rsplit(":", 1)[1] for r in rejects] == ["2", "3"]


def test_check_counts_and_names_bad_rows(cli, tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"instruction": "q", "output": "a", "label": true}\n{"instruction": "q", "output": "a", "label": null}\n'
                 '{"instruction": "", "output": "a", "label": false}\n', encoding="utf-8")
    code, out, _ = cli("check", f, "--stage", "kto")
    assert code == 1 and "3 row(s), 2 usable for stage kto, 1 dropped by LLaMA-Factory" in out
    assert "d.jsonl:2: LLaMA-Factory drops it: no true/false kto_tag" in out
    assert "d.jsonl:3: the prompt is empty (LLaMA-Factory keeps the row)" in out
    code, out, _ = cli("check", f, "--stage", "sft", "--preview", "1")
    assert code == 0 and "3 row(s), 3 usable for stage sft" in out
    assert json.loads(out.splitlines()[1]) == {"prompt": [{"role": "user", "content": "q"}],
                                               "response": [{"role": "assistant", "content": "a"}]}
    f.write_text('{"instruction": "q", "output": "a", "label": true}\n{"instruction": "q", "output": "a", "label": "yes"}\n')
    code, out, _ = cli("check", f, "--stage", "kto")
    assert code == 1 and "1 that stop LLaMA-Factory" in out
    assert "d.jsonl:2: field 'label' is text here but true/false at line 1" in out


def test_check_refuses_stage_data_mismatch(cli, tmp_path):
    cli("convert", "zhihu_sft", "--sample", "--data-dir", tmp_path)
    code, _, err = cli("check", "zhihu_sft", "--stage", "dpo", "--data-dir", tmp_path)
    assert code == 2 and "ranking" in err


def test_parquet_and_csv_sources(cli, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"question": ["q1", "q2"], "response_j": ["g1", "g2"], "response_k": ["b1", "b2"]}), tmp_path / "p.parquet")
    code, _, err = cli("convert", tmp_path / "p.parquet", "--kind", "pairs", "-o", tmp_path / "p.jsonl")
    assert code == 0, err
    assert rows(tmp_path / "p.jsonl")[1] == {"instruction": "q2", "input": "", "chosen": "g2", "rejected": "b2"}
    (tmp_path / "c.csv").write_text("instruction,input,output\n你好,,您好\n,x,y\n", encoding="utf-8")
    code, _, err = cli("convert", tmp_path / "c.csv", "--kind", "alpaca", "-o", tmp_path / "c.jsonl")
    assert code == 2 and "c.csv:3" in err and "'instruction' is empty" in err


def test_check_flags_template_placeholders_left_in_rows(cli, tmp_path):
    """Identity data in LLaMA-Factory's style keeps {{name}} and {{author}} for the user to fill in: check says so, with
    rows per placeholder and a sed command that does it (after which the note is gone)."""
    import shlex
    import shutil
    import subprocess

    rows = [{"instruction": "你是谁？", "input": "", "output": "我是 {{name}}，由 {{ author }} 开发的助手。"},
            {"instruction": "hi", "input": "", "output": "Hello, I am {{name}}."},
            {"instruction": "2+2?", "input": "", "output": "4 (a set in math is written {a, b})"}]
    f = tmp_path / "my identity's rows.json"  # a path the shell would split or misread unquoted
    f.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    code, out, _ = cli("check", f, "--stage", "sft")
    assert code == 0 and "3 row(s), 3 usable for stage sft" in out
    note = next(line for line in out.splitlines() if "note:" in line)
    assert "2 row(s) hold LLaMA-Factory's identity placeholder(s) ({{author}} in 1, {{name}} in 2), the first at " in note
    command = shlex.split(note.split("e.g. ", 1)[1])
    assert command[:2] == ["sed", "-i.bak"] and command[-1] == str(f)
    if shutil.which("sed"):  # the suggested command fills every placeholder, spaced or not
        subprocess.run(command, check=True)
        fixed = json.loads(f.read_text(encoding="utf-8"))
        assert [r["output"] for r in fixed[:2]] == ["我是 YOUR_NAME，由 YOUR_AUTHOR 开发的助手。", "Hello, I am YOUR_NAME."]
        code, out, _ = cli("check", f, "--stage", "sft")
        assert code == 0 and "note:" not in out


def test_placeholders_in_a_binary_file_get_no_sed_command(cli, tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "identity.parquet"
    pq.write_table(pa.table({"instruction": ["who are you?"], "input": [""], "output": ["I am {{name}}."]}), f)
    code, out, _ = cli("check", f, "--stage", "sft")
    note = next(line for line in out.splitlines() if "note:" in line)
    assert code == 0 and "({{name}} in 1)" in note and "sed" not in note, out


def test_template_syntax_taught_by_rows_is_not_taken_for_a_placeholder(cli, tmp_path):
    rows = [{"instruction": "How do I print a variable in Jinja?", "input": "", "output": "Write {{ user.title }}."},
            {"instruction": "And in Vue?", "input": "", "output": "<p>{{ message }}</p>, or {{ count + 1 }}."},
            {"instruction": "Handlebars?", "input": "", "output": "{{#each items}}{{this}}{{/each}}"}]
    f = tmp_path / "templates.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, out, _ = cli("check", f, "--stage", "sft")
    assert code == 0 and "3 usable" in out and "note:" not in out, out




def test_check_and_convert_name_a_missing_file_alike(cli, tmp_path):
    missing = tmp_path / "nowhere" / "rows.jsonl"
    check = cli("check", missing, "--stage", "sft", "--data-dir", tmp_path)
    convert = cli("convert", missing, "--kind", "alpaca", "-o", tmp_path / "out.jsonl")
    for code, _, err in (check, convert):
        assert code == 2 and f"{missing} does not exist" in err and "check the path; a NAME is an entry of " in err, err
    assert not list(tmp_path.iterdir())

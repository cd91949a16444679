"""clean reads a JSON array file (as LLaMA-Factory's demo files and many exports are) like the same rows as JSON lines."""

import json


def test_json_array_cleans_like_its_json_lines(cli, tmp_path):
    rows = [{"input_text": "q1", "target_text": "a1"}, {"input_text": "", "target_text": "a2"},
            {"input_text": "q3", "target_text": "a3"}, {"input_text": "q1", "target_text": "a1"}]
    (tmp_path / "demo.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    (tmp_path / "demo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = ["--drop-empty", "--dedup", "--rename", "input_text=prompt,target_text=response"]
    assert cli("clean", tmp_path / "demo.json", "-o", tmp_path / "a.jsonl", *args)[0] == 0
    assert cli("clean", tmp_path / "demo.jsonl", "-o", tmp_path / "b.jsonl", *args)[0] == 0
    got = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert got == [{"prompt": "q1", "response": "a1"}, {"prompt": "q3", "response": "a3"}]
    assert got == [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]


def test_broken_json_array_names_the_line(cli, tmp_path):
    (tmp_path / "demo.json").write_text('[\n {"a": "x"},\n {"a": }\n]', encoding="utf-8")
    code, _, err = cli("clean", tmp_path / "demo.json", "-o", tmp_path / "a.jsonl")
    assert code == 2 and "demo.json:3" in err and "invalid JSON" in err
    assert not (tmp_path / "a.jsonl").exists()


def test_json_array_samples_its_rows(cli, tmp_path):
    src = tmp_path / "in.json"
    src.write_text("[\n" + ",\n".join(json.dumps({"id": i}) for i in range(3000)) + "\n]\n")
    assert cli("clean", src, "-o", tmp_path / "out.jsonl", "--sample", "10")[0] == 0
    ids = [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(ids) == 10 == len(set(ids)) and ids == sorted(ids)


def test_json_array_messages_count_rows_not_file_lines(cli, tmp_path):
    """An indented array spreads each row over several file lines: the numbers clean prints are rows, and say so."""
    rows = [{"instruction": f"Question number {i} about the weather today?", "output": f"Answer {i}."} for i in range(6)]
    rows.append(dict(rows[2]))
    src = tmp_path / "demo.json"
    src.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    code, out, err = cli("clean", src, "-o", tmp_path / "a.jsonl", "--near-dedup")
    assert code == 0 and "row 7 ~ row 3 (1.00)" in out and "line" not in out.split("near-duplicates:")[1], out + err
    code, out, err = cli("clean", src, "-o", tmp_path / "b.jsonl", "--sample", "2")
    assert code == 0 and "sampled from 7 rows" in out, out + err

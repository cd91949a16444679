import json

import pytest

from llf_recipes.data.gsm8k import SYSTEM_PROMPT, hash_answer, normalize_number


@pytest.mark.parametrize("text, want", [
    ("72", "72"), ("1,000", "1000"), ("72.0", "72"), ("3.50", "3.5"), (" $5 ", "5"), ("-4", "-4"), ("+7", "7"),
    ("12,34", None), ("seventy", None), ("", None), (None, None), ("1 000", None),
])
def test_normalize_number(text, want):
    assert normalize_number(text) == want


def test_hash_answer():
    assert hash_answer("3 * 4 = <<3*4=12>>12\n#### 12") == "12"
    assert hash_answer("...\n#### 1,200") == "1200"
    assert hash_answer("no marker 12") is None and hash_answer("#### twelve") is None and hash_answer(7) is None


def test_convert_drops_and_counts_rows_without_a_number(cli, tmp_path):
    src = tmp_path / "g.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"question": "2+2?", "answer": "2+2=4\n#### 4"},
        {"question": "lost?", "answer": "no final line"},
        {"question": "words?", "answer": "#### four"},
        {"question": "big?", "answer": "#### 1,024"},
    ]) + "\n", encoding="utf-8")
    code, out, _ = cli("convert", src, "--kind", "gsm8k_grpo", "-o", tmp_path / "o.jsonl")
    assert code == 0 and "4 row(s) read, 2 written" in out and "2 dropped" in out
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in rows] == ["4", "1024"]
    assert rows[0]["prompt"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert len(rows[0]["prompt"]) == 4 and rows[0]["prompt"][-1]["content"] == "2+2?"  # system, one-shot pair, question
    code, _, _ = cli("convert", src, "--kind", "gsm8k_grpo", "-o", tmp_path / "p.jsonl", "--option", "one_shot=false")
    assert len(json.loads((tmp_path / "p.jsonl").read_text().splitlines()[0])["prompt"]) == 2


def test_prepare_gsm8k_sample(cli, tmp_path):
    code, _, err = cli("prepare", "gsm8k_grpo", "--sample", "--data-dir", tmp_path)
    assert code == 0, err
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["gsm8k_grpo"]["columns"]["messages"] == "prompt"
    answers = [json.loads(line)["answer"] for line in (tmp_path / "gsm8k_grpo.jsonl").read_text().splitlines()]
    assert len(answers) == 30 and all(a.lstrip("-").replace(".", "").isdigit() for a in answers)
    assert "15360" in answers  # "#### 15,360" in the sample

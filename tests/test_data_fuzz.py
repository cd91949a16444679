"""The data verbs against generated malformed input (a fixed seed, so every run sees the same cases): whatever is
wrong, the verb ends with a non-zero exit and an error naming the file and line, never a traceback, and leaves nothing
at its destination."""

from __future__ import annotations

import csv
import io
import json
import random
import re

import pytest

SEED = 20240531
CASES = 72

GOOD = [{"instruction": f"问题 {i}：怎么办？", "input": "" if i % 3 else f"上下文 {i}", "output": f"回答 {i}。" * (1 + i % 4)}
        for i in range(24)]


def jsonl_lines() -> list[bytes]:
    return [json.dumps(r, ensure_ascii=False).encode() for r in GOOD]


def _cut(rng, line):
    return line[: rng.randrange(1, len(line) - 1)]


def _bad_utf8(rng, line):
    at = rng.randrange(1, len(line) - 1)
    return line[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]) + line[at:]


def _not_object(rng, line):
    return rng.choice([b"[1, 2]", b'"text"', b"42", b"null", b"true", b"[]", b'[{"instruction": "a"}]'])


def _deep(rng, line):
    depth = rng.randrange(1100, 6000)
    return b'{"instruction": ' + b"[" * depth + b"]" * depth + b', "output": "x"}'


def _nan(rng, line):
    return b'{"instruction": "q", "output": ' + rng.choice([b"NaN", b"Infinity", b"-Infinity", b"undefined"]) + b"}"


def _control(rng, line):
    at = line.index(b'"output": "') + 11
    return line[:at] + rng.choice([b"\x00", b"\x01", b"\x1f", b"\t", b"\n"]) + line[at:]


def _syntax(rng, line):
    return rng.choice([line + b",", line[:-1] + b",}", line.replace(b'"', b"'"), line + line, line[1:],
                       line.replace(b":", b"=", 1), b"{" + line, line.replace(b'"instruction"', b"instruction")])


def _bom(rng, line):
    return b"\xef\xbb\xbf" + line


MUTATIONS = [_cut, _bad_utf8, _not_object, _deep, _nan, _control, _syntax, _bom]


def _csv_case(rng):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["instruction", "input", "output"])
    for r in GOOD[:10]:
        w.writerow([r["instruction"], r["input"], r["output"]])
    lines = buf.getvalue().encode().splitlines()
    k = rng.randrange(1, len(lines))
    kind = rng.choice(["quote", "utf8", "fields"])
    if kind == "quote":
        lines[k] = b'"' + lines[k]
    elif kind == "utf8":
        lines[k] = lines[k][:3] + b"\xff\xfe" + lines[k][3:]
    else:
        lines[k] = lines[k] + b",extra,more"
    return b"\n".join(lines) + b"\n", k + 1, ".csv"


def _json_array_case(rng):
    text = json.dumps(GOOD[:8], ensure_ascii=False, indent=2)
    kind = rng.choice(["cut", "nan", "deep"])
    if kind == "cut":
        text = text[: rng.randrange(len(text) // 4, len(text) - 2)]
        return text.encode(), text.count("\n") + 1, ".json"
    k = rng.randrange(8)
    old = f'"output": {json.dumps(GOOD[k]["output"], ensure_ascii=False)}'
    new = '"output": NaN' if kind == "nan" else '"output": ' + "[" * 1500 + "]" * 1500
    line = text[: text.index(old)].count("\n") + 1
    return text.replace(old, new, 1).encode(), line, ".json"


def make_case(rng: random.Random) -> tuple[bytes, int, str]:
    """-> (file bytes, the 1-based line that is wrong, suffix)."""
    roll = rng.random()
    if roll < 0.12:
        return _csv_case(rng)
    if roll < 0.22:
        return _json_array_case(rng)
    lines = jsonl_lines()
    k = rng.randrange(len(lines))
    mutation = MUTATIONS[rng.randrange(len(MUTATIONS))]
    if mutation is _bom and k == 0:
        k = 1  # a BOM at the very start is allowed
    lines[k] = mutation(rng, lines[k])
    return b"\n".join(lines) + b"\n", k + 1, ".jsonl"


def cases():
    rng = random.Random(SEED)
    out, seen = [], set()
    for i in range(CASES):
        data, line, suffix = make_case(rng)
        while data in seen:
            data, line, suffix = make_case(rng)
        seen.add(data)
        verb = ["clean", "convert", "check", "register"][i % 4]
        if suffix != ".jsonl" and verb == "clean":
            verb = "convert"  # clean reads JSONL only
        out.append((i, verb, data, line, suffix))
    return out


@pytest.mark.parametrize(("index", "verb", "data", "line", "suffix"), cases(), ids=[f"{c[0]}-{c[1]}" for c in cases()])
def test_malformed_input_is_one_error_with_file_and_line_and_nothing_written(cli, tmp_path, index, verb, data, line,
                                                                             suffix):
    src = tmp_path / f"case{index}{suffix}"
    src.write_bytes(data)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dest = out_dir / "rows.jsonl"
    argv = {
        "clean": ["clean", src, "-o", dest],
        "convert": ["convert", src, "--kind", "alpaca", "-o", dest],
        "check": ["check", src, "--stage", "sft"],
        "register": ["register", "--file", src, "--name", "fuzzed", "--stage", "sft", "--data-dir", out_dir],
    }[verb]
    code, out, err = cli(*argv)  # an exception here (a traceback for the user) fails the test
    assert code != 0, out + err
    text = out + err
    assert "Traceback" not in text
    assert re.search(rf"{re.escape(str(src))}:{line}\b", text), f"no {src.name}:{line} in:\n{text}"
    assert sorted(p.name for p in out_dir.iterdir()) == [], "something was written"


def test_the_generated_cases_are_many_and_varied():
    found = cases()
    assert len(found) >= 60
    assert len({c[2] for c in found}) == len(found)  # no duplicates
    assert {c[1] for c in found} == {"clean", "convert", "check", "register"}
    assert {c[4] for c in found} == {".jsonl", ".csv", ".json"}

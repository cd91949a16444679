"""`judge`: grade a `generate` output (every answer 1-10), or compare two outputs answer by answer (win rate of A
over B), and write the judged rows, the set-aside malformed replies and a summary into evaluation_results.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llf_recipes.atomic import write_text
from llf_recipes.errors import LlfError
from llf_recipes.judge import grading
from llf_recipes.judge.client import Judge


def read_generated(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise LlfError(f"no such file: {path}", fix="write it with llf-recipes generate ... -o FILE")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row.get("answers"), list) or "index" not in row:
                raise ValueError
        except (ValueError, AttributeError):
            raise LlfError("not a row written by llf-recipes generate (index, prompt, answers)",
                           where=f"{path}:{number}") from None
        rows.append(row)
    return rows


def grade(judge: Judge, rows: list[dict[str, Any]], rubric: Path | None, progress=None) -> tuple[list, list, dict]:
    """Every answer of every row graded: (rows with `scores`, malformed replies, summary)."""
    template = grading.load_template(rubric, grading.SINGLE)
    where = str(rubric or "the built-in rubric")
    slots, prompts = [], []
    for r, row in enumerate(rows):
        for a, answer in enumerate(row["answers"]):
            text = grading.render(template, where, question=grading.question_of(row),
                                  reference=grading.reference_text(row), answer=answer)
            slots.append((r, a))
            prompts.append([{"role": "user", "content": text}])
    replies = judge.ask_all(prompts, progress)
    scored = [{**row, "scores": [None] * len(row["answers"])} for row in rows]
    malformed, scores = [], []
    for (r, a), reply in zip(slots, replies):
        value = grading.parse_grade(reply)
        if value is None:
            if reply is not None:
                malformed.append({"index": rows[r]["index"], "answer": a, "reply": reply})
            continue
        scored[r]["scores"][a] = value
        scores.append(value)
    summary = {"mode": "single", "answers": len(slots), "graded": len(scores),
               "mean_score": round(sum(scores) / len(scores), 4) if scores else None,
               "malformed": len(malformed), "failed": judge.stats.failed}
    return scored, malformed, summary


def compare(judge: Judge, rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]], rubric: Path | None,
            progress=None) -> tuple[list, list, dict]:
    """The first answer of A against the first answer of B for every prompt both hold, asked in both orders."""
    template = grading.load_template(rubric, grading.PAIRWISE)
    where = str(rubric or "the built-in pairwise rubric")
    by_index = {row["index"]: row for row in rows_b if row["answers"]}
    pairs = [(row, by_index[row["index"]]) for row in rows_a if row["answers"] and row["index"] in by_index]
    if not pairs:
        raise LlfError("the two outputs share no prompt (rows are matched by index)",
                       fix="generate both over the same dataset")
    prompts = []
    for a, b in pairs:
        question = grading.question_of(a)
        for first, second in ((a, b), (b, a)):
            prompts.append([{"role": "user", "content": grading.render(
                template, where, question=question, answer_a=first["answers"][0], answer_b=second["answers"][0])}])
    replies = judge.ask_all(prompts, progress)
    verdicts, malformed = [], []
    counts = {"A": 0, "B": 0, "C": 0, "inconsistent": 0}
    for k, (a, _) in enumerate(pairs):
        first, second = replies[2 * k], replies[2 * k + 1]
        parsed = grading.parse_verdict(first), grading.parse_verdict(second)
        if None in parsed:
            for order, (reply, verdict) in enumerate(zip((first, second), parsed)):
                if verdict is None and reply is not None:
                    malformed.append({"index": a["index"], "order": "AB" if order == 0 else "BA", "reply": reply})
            continue
        verdict = grading.combine(*parsed)
        counts[verdict] += 1
        if verdict == "C" and parsed[0] != "C" and parsed[1] != "C":
            counts["inconsistent"] += 1
        verdicts.append({"index": a["index"], "verdict": verdict, "orders": {"AB": parsed[0], "BA": parsed[1]}})
    n = counts["A"] + counts["B"] + counts["C"]
    wins = counts["A"] + 0.5 * counts["C"]
    summary = {"mode": "pairwise", "prompts": len(pairs), "judged": n, "wins": counts["A"], "losses": counts["B"],
               "ties": counts["C"], "position_inconsistent": counts["inconsistent"],
               "win_rate": round(wins / n, 4) if n else None, "win_rate_ci95": grading.wilson(wins, n),
               "malformed": len(malformed), "failed": judge.stats.failed}
    return verdicts, malformed, summary


def write_outputs(output: Path, rows: list[dict[str, Any]], malformed: list[dict[str, Any]]) -> Path | None:
    write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    aside = output.with_name(output.stem + ".malformed.jsonl")
    if malformed:
        write_text(aside, "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in malformed))
        return aside
    aside.unlink(missing_ok=True)
    return None


def generated_by(rows: list[dict[str, Any]]) -> tuple[Path, dict[str, Any]] | None:
    """The run whose model generated the rows (its directory and manifest), when it still exists."""
    from llf_recipes import manifest

    run = str((rows[0].get("settings") or {}).get("run") or "") if rows else ""
    data = manifest.read(run) if run and Path(run).is_dir() else None
    return (Path(run), data) if data else None


def default_results(found: tuple[Path, dict[str, Any]] | None, answers: Path) -> Path:
    """evaluation_results.json of the runs directory holding the generating run `found` (generated_by: saves/zhihu
    for saves/zhihu/sft), the file `eval saves/zhihu` writes and `report saves/zhihu` reads; beside the answers for a
    model with no run."""
    from llf_recipes.eval.runs import RESULTS

    return (found[0].parent if found else answers.parent) / RESULTS


def record_results(results: Path, rows: list[dict[str, Any]], found: tuple[Path, dict[str, Any]] | None, label: str,
                   summary: dict[str, Any], fallback: str) -> str:
    """Into evaluation_results.json under the run that generated the answers (`found`, from generated_by: `judge` ->
    label -> summary); answers from no known run are filed under the path they name, else `fallback`."""
    from llf_recipes.eval.runs import run_name, write_results

    run = str((rows[0].get("settings") or {}).get("run") or "") if rows else ""
    name = run_name(*found) if found else (run or fallback)
    entry: dict[str, Any] = {"judge": {label: summary}}
    if run:
        entry["model_path"] = run
    write_results(results, {name: entry}, merge_keys=("judge",))
    return name


def progress_bar(total: int, desc: str, enabled: bool):
    from llf_recipes.stepslog import progress_bar as bar

    return bar(total, desc, enabled)

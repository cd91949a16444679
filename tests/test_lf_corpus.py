"""Our configs, one per option family of LLaMA-Factory 0.9.5's examples/, checked by LLaMA-Factory's own argument
parsing (tests/lf_oracle.py) and by `llf-recipes validate`: every config it accepts is accepted, every config it
refuses is refused with the key named. Each file's header says what it is for:

    # llamafactory-cli: train|chat|export     the verb a user runs it with (validate infers it from the keys)
    # launch: torchrun                        started as LLaMA-Factory starts DeepSpeed (FORCE_TORCHRUN=1)
    # needs: a,b                              distributions it needs; where one is missing both must refuse
    # expect: accept | refuse KEY | later KEY (later: the parser takes it, training stops on it; validate refuses)

With LLF_LLAMAFACTORY_SRC pointing at a LLaMA-Factory v0.9.5 checkout, every YAML of its examples/ is compared too.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llf_recipes import yamlio
from llf_recipes.plain_config import infer_verb

CORPUS = Path(__file__).parent / "lf_corpus"
ORACLE = Path(__file__).parent / "lf_oracle.py"


def header(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("# ") or ":" not in line:
            break
        key, value = line[2:].split(":", 1)
        out[key.strip()] = value.strip()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llamafactory_verdicts(jobs: list[dict], tmp: Path) -> dict[str, dict]:
    """Run the oracle once for plain launches and once under a simulated one-process torchrun, side by side."""
    procs, outs = [], []
    for torchrun in (False, True):
        batch = [j for j in jobs if j["torchrun"] == torchrun]
        if not batch:
            continue
        jobs_file, out_file = tmp / f"jobs-{torchrun}.json", tmp / f"out-{torchrun}.json"
        jobs_file.write_text(json.dumps(batch))
        env = {k: v for k, v in os.environ.items() if k not in ("FORCE_TORCHRUN", "PYTHONPATH")}
        env.update(CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
        if torchrun:
            env.update(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(_free_port()))
        with open(tmp / f"oracle-{torchrun}.log", "w") as log:  # the child keeps its own copy of the descriptor
            procs.append(subprocess.Popen([sys.executable, str(ORACLE), str(jobs_file), str(out_file)], env=env,
                                          stdout=log, stderr=subprocess.STDOUT, cwd=tmp))
        outs.append(out_file)
    for proc in procs:
        assert proc.wait(timeout=900) == 0, f"the oracle failed: see {tmp}"
    results: dict[str, dict] = {}
    for out in outs:
        results.update(json.loads(out.read_text()))
    return results


def validate(cli, monkeypatch, path: Path, cwd: Path, torchrun: bool) -> tuple[int, str]:
    monkeypatch.chdir(cwd)
    if torchrun:
        monkeypatch.setenv("FORCE_TORCHRUN", "1")
    else:
        monkeypatch.delenv("FORCE_TORCHRUN", raising=False)
    code, out, err = cli("validate", str(path))
    return code, out + err


def _missing(needs: str | None) -> list[str]:
    missing = []
    for dist in filter(None, (needs or "").split(",")):
        try:
            importlib.metadata.version(dist.strip())
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist.strip())
    return missing


CONFIGS = sorted(CORPUS.glob("*.yaml"))


@pytest.fixture(scope="module")
def corpus_verdicts(tmp_path_factory):
    pytest.importorskip("llamafactory", reason="needs the train extra (llamafactory + torch)")
    jobs = [{"path": str(p), "verb": header(p)["llamafactory-cli"], "cwd": str(CORPUS),
             "torchrun": header(p).get("launch") == "torchrun"} for p in CONFIGS]
    return llamafactory_verdicts(jobs, tmp_path_factory.mktemp("oracle"))


def test_corpus_covers_every_family():
    kinds = {header(p)["expect"].split()[0] for p in CONFIGS}
    assert kinds == {"accept", "refuse", "later"} and len(CONFIGS) >= 60
    verbs = {header(p)["llamafactory-cli"] for p in CONFIGS}
    assert verbs == {"train", "chat", "export"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_llamafactory_and_validate_agree(path, corpus_verdicts, cli, monkeypatch):
    head = header(path)
    config = yamlio.load(path.read_text(encoding="utf-8"))
    assert infer_verb(config) == head["llamafactory-cli"], "validate infers another verb than the one it is run with"
    expect, _, key = head["expect"].partition(" ")
    missing = _missing(head.get("needs"))
    lf = corpus_verdicts[str(path)]
    code, output = validate(cli, monkeypatch, path, CORPUS, head.get("launch") == "torchrun")
    if expect == "accept" and missing:
        assert not lf["ok"], f"LLaMA-Factory ran without {missing}"
        assert code == 1 and "missing-package" in output and f"pip install {missing[0]}" in output, output
    elif expect == "accept":
        assert lf["ok"] and not lf["ds_mismatches"], lf
        assert code == 0, output
    elif expect == "refuse":
        assert not lf["ok"], f"LLaMA-Factory accepted {path.name}"
        assert code == 1 and f"] {key}: " in output, f"validate did not name {key}:\n{output}"
    else:  # later: the argument parser takes it; training would stop on it
        assert lf["ok"], lf
        assert code == 1 and f"] {key}: " in output, f"validate did not name {key}:\n{output}"
        if key == "deepspeed":
            assert lf["ds_mismatches"], "the HF Trainer saw no DeepSpeed mismatch"


SRC = os.environ.get("LLF_LLAMAFACTORY_SRC")


@pytest.mark.skipif(not SRC, reason="set LLF_LLAMAFACTORY_SRC to a LLaMA-Factory v0.9.5 checkout")
def test_llamafactory_examples_agree(cli, monkeypatch, tmp_path):
    pytest.importorskip("llamafactory", reason="needs the train extra (llamafactory + torch)")
    root = Path(SRC).resolve()
    paths = sorted((root / "examples").rglob("*.yaml"))
    verb_of = {"inference": "chat", "merge_lora": "export"}
    jobs = []
    for p in paths:
        config = yamlio.load(p.read_text(encoding="utf-8")) or {}
        jobs.append({"path": str(p), "verb": verb_of.get(p.relative_to(root / "examples").parts[0], "train"),
                     "cwd": str(root), "torchrun": isinstance(config, dict) and "deepspeed" in config})
    verdicts = llamafactory_verdicts(jobs, tmp_path)
    rows, agree, later = [], 0, 0
    for job in jobs:
        code, output = validate(cli, monkeypatch, Path(job["path"]), root, job["torchrun"])
        lf_ok = verdicts[job["path"]]["ok"]
        same = lf_ok == (code == 0)
        # A dataset name its data/dataset_info.json does not define passes the argument parser and stops the data
        # loader ("Undefined dataset ... in dataset_info.json"): refused earlier, not wrongly.
        rules = set(re.findall(r"^error: .*\n  fix: .*\(rule ([\w-]+)\)$", output, re.MULTILINE))
        caught_earlier = lf_ok and code == 1 and rules == {"undefined-dataset"}
        agree += same
        later += caught_earlier
        rows.append({"path": str(Path(job["path"]).relative_to(root)), "llamafactory": verdicts[job["path"]],
                     "validate_ok": code == 0, "agree": same, "caught_earlier": caught_earlier,
                     "validate": output.strip().splitlines()[:6]})
    report = Path(os.environ.get("LLF_EXAMPLES_REPORT", tmp_path / "examples-agreement.json"))
    report.write_text(json.dumps({"agree": agree, "caught_earlier": later, "total": len(jobs), "rows": rows}, indent=1))
    print(f"\nLLaMA-Factory examples: {agree}/{len(jobs)} agree, {later} refused earlier for an undefined dataset "
          f"(details: {report})")
    disagreements = [r["path"] for r in rows if not r["agree"] and not r["caught_earlier"]]
    assert not disagreements, disagreements

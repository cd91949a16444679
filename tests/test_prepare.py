"""prepare: download from a hub (a local server in the hub's own layout) -> convert -> check -> register."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLES, run_cli_subprocess
from hubserver import HubServer
from test_download import env, served, write_repo  # noqa: F401 - env is a fixture

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def test_prepare_from_the_hub(tmp_path, env):  # noqa: F811
    rows = [json.loads(line) for line in (SAMPLES / "zhihu_rlhf.jsonl").read_text(encoding="utf-8").splitlines()]
    shard = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), shard)
    write_repo(tmp_path / "hub", "liyucheng/zhihu_rlhf_3k", {"data/train-00000-of-00001.parquet": shard.read_bytes(),
                                                             "README.md": b"# zhihu\n"})
    data = tmp_path / "data"
    with HubServer(tmp_path / "hub") as server:
        proc = subprocess.run([sys.executable, "-m", "llf_recipes", "prepare", "--recipe", "zhihu", "--data-dir", str(data)],
                              cwd=ROOT, env=served(server, env), capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((data / "dataset_info.json").read_text(encoding="utf-8"))
    assert set(info) == {"zhihu_sft", "zhihu_rlhf"} and info["zhihu_rlhf"]["ranking"] is True
    pairs = [json.loads(line) for line in (data / "zhihu_rlhf.jsonl").read_text(encoding="utf-8").splitlines()]
    sft = [json.loads(line) for line in (data / "zhihu_sft.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(pairs) == len(sft) == len(rows)
    assert pairs[0]["chosen"] == rows[0]["chosen"] and sft[0]["output"] == rows[0]["chosen"]
    assert "checked for dpo" in proc.stdout and f"registered zhihu_sft, zhihu_rlhf in {data}" in proc.stdout


def test_prepare_sample_for_a_recipe(tmp_path):
    proc = run_cli_subprocess("prepare", "--recipe", "kto-ultrafeedback", "--sample", "--data-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ultrafeedback_kto: 60 row(s)" in proc.stdout
    assert json.loads((tmp_path / "dataset_info.json").read_text())["ultrafeedback_kto"]["columns"]["kto_tag"] == "label"
    again = run_cli_subprocess("prepare", "--recipe", "kto-ultrafeedback", "--sample", "--data-dir", tmp_path)
    assert again.returncode == 0 and f"{tmp_path}/dataset_info.json: already registered, unchanged" in again.stdout
    assert "registered" not in again.stdout.replace("already registered", "")


def test_prepare_needs_something(tmp_path):
    proc = run_cli_subprocess("prepare", "--data-dir", tmp_path)
    assert proc.returncode == 2 and "nothing to prepare" in proc.stderr

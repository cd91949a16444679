"""The quick verbs must never import torch (nor transformers or llamafactory, which pull it in)."""

import os

import pytest
from conftest import run_cli_subprocess


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory):
    d = tmp_path_factory.mktemp("poison")
    for mod in ("torch", "transformers", "llamafactory"):
        (d / mod).mkdir()
        (d / mod / "__init__.py").write_text(f"raise ImportError('{mod} imported by a quick verb')\n")
    return {"PYTHONPATH": os.pathsep.join([str(d), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("argv", [
    ["list"], ["list", "--json"], ["show", "zhihu"], ["render", "zhihu", "--hostfile", "2node-8gpu"],
    ["validate", "--all", "--all-hostfiles"], ["run", "rlhf-ultrafeedback", "--gpus", "0,1", "--dry-run"],
    ["register", "--all", "--data-dir", "{tmp}", "--dry-run"], ["convert", "zhihu_sft", "--sample", "--data-dir", "{tmp}"],
    ["prepare", "--recipe", "zhihu", "--sample", "--data-dir", "{tmp}"],
    ["schema", "--verb", "chat"], ["validate", "tests/lf_corpus/lora_sft_ray.yaml", "--gpus", "0,1"],
    ["register", "--file", "tests/data/layouts/sharegpt_sft.json", "--name", "x", "--stage", "sft", "--data-dir", "{tmp}"],
    ["check", "tests/data/layouts/images_sft.json", "--stage", "sft", "--data-dir", "tests/data/layouts", "--preview", "1"],
    ["engine", "list"], ["run", "rlhf-ultrafeedback", "--smoke", "--dry-run"], ["run", "sft-selfplay-dpo", "--dry-run"],
])
def test_quick_verbs_do_not_import_torch(poisoned, argv, tmp_path):
    proc = run_cli_subprocess(*[a.replace("{tmp}", str(tmp_path)) for a in argv], env=poisoned)
    # a dry run exits 1 when it lists problems `run` would stop on (no data registered here, no GPU)
    assert proc.returncode == (1 if "would stop on" in proc.stdout else 0), proc.stderr
    assert "imported by a quick verb" not in proc.stderr

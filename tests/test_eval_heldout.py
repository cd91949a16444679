"""Which rows `eval --dataset` scores a run on, read through LLaMA-Factory's own loader."""

from __future__ import annotations

import json

import pytest
from conftest import make_data_dir

pytest.importorskip("llamafactory", reason="needs the train extra (llamafactory + torch)")


def _rows(path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


@pytest.mark.parametrize("strategy", ["interleave_under", "interleave_over"])
def test_named_datasets_are_used_whole_whatever_the_run_mixed(tmp_path, catalog, strategy):
    """A run trained on two datasets interleaved with weights; a named test set is read whole, without them."""
    from llf_recipes.eval.heldout import named_heldout

    data = make_data_dir(tmp_path / "data", catalog, ["huanhuan", "belle_2m"])
    config = {"stage": "sft", "template": "qwen", "dataset": "huanhuan,belle_2m", "dataset_dir": str(data),
              "mix_strategy": strategy, "interleave_probs": "0.9,0.1", "cutoff_len": 256}
    huanhuan = _rows(data / catalog.dataset("huanhuan").entry["file_name"])
    belle = _rows(data / catalog.dataset("belle_2m").entry["file_name"])

    one = named_heldout(["huanhuan"], config, {}, None, None)
    assert (one.kind, len(one.rows)) == ("sft", huanhuan)
    both = named_heldout(["huanhuan", "belle_2m"], config, {}, None, None)
    assert len(both.rows) == huanhuan + belle  # every row once, not a weighted sample
    prompts = {json.dumps(r["_prompt"], ensure_ascii=False) for r in both.rows}
    assert len(prompts) > huanhuan  # rows of both datasets are in it

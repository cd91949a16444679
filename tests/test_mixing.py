"""Mixing datasets: the expected rows per source agree with datasets' interleave_datasets (what LLaMA-Factory calls),
the mixing rules refuse what it would refuse, `prepare` prints the mix, and the mixed recipe trains."""

import json

import pytest
from conftest import run_cli_subprocess

from llf_recipes.data.mixing import expected_mix
from llf_recipes.schema.rules import validate_config

# (strategy as LLaMA-Factory names it, stopping strategy it passes, probabilities or None)
MIXES = [("interleave_under", "first_exhausted", [0.92, 0.08]), ("interleave_over", "all_exhausted", [0.7, 0.3]),
         ("interleave_under", "first_exhausted", None), ("interleave_over", "all_exhausted", None)]


@pytest.mark.parametrize("strategy, stopping, probs", MIXES)
def test_expected_rows_agree_with_interleave_datasets(strategy, stopping, probs):
    from datasets import Dataset, interleave_datasets

    sizes = {"role": 200, "general": 3000}
    parts = [Dataset.from_dict({"src": [name] * n}) for name, n in sizes.items()]
    config = {"dataset": "role,general", "mix_strategy": strategy, "max_samples": 2000}
    if probs:
        config["interleave_probs"] = ",".join(map(str, probs))
    mix = expected_mix(config, sizes)
    capped = [p.select(range(min(len(p), 2000))) for p in parts]
    got = {}
    for seed in (0, 1, 2):
        merged = interleave_datasets(capped, probabilities=probs, seed=seed, stopping_strategy=stopping)
        for name in sizes:
            got[name] = got.get(name, 0) + merged["src"].count(name) / 3
    for name in sizes:
        assert got[name] == pytest.approx(mix.rows[name], rel=0.1, abs=15), (name, got, mix.rows)


def test_probabilities_that_do_not_sum_to_one_are_what_datasets_refuses():
    from datasets import Dataset, interleave_datasets

    parts = [Dataset.from_dict({"x": [1, 2]}), Dataset.from_dict({"x": [3]})]
    with pytest.raises(ValueError):
        interleave_datasets(parts, probabilities=[0.9, 0.2], seed=0)
    interleave_datasets(parts, probabilities=[0.92, 0.08], seed=0)  # accepted: so must the rule
    base = {"dataset": "a,b", "mix_strategy": "interleave_under"}
    assert {f.rule for f in validate_config({**base, "interleave_probs": "0.9,0.2"})} >= {"interleave-probs-sum"}
    assert not [f for f in validate_config({**base, "interleave_probs": "0.92,0.08"}) if "interleave" in f.rule]
    with pytest.raises(ValueError):  # interleave_once's stopping strategy, with the datasets LLaMA-Factory 0.9.5 allows
        interleave_datasets(parts, seed=0, stopping_strategy="all_exhausted_without_replacement")


def test_validate_refuses_a_mis_sized_mix_naming_the_key(cli):
    code, out, err = cli("validate", "sft-huanhuan-mixed")
    assert code == 0, out + err
    code, out, err = cli("validate", "sft-huanhuan-mixed", "--set", "interleave_probs=0.2,0.2,0.1")
    text = out + err
    assert code != 0 and "interleave_probs: 3 probabilities for 2 dataset entries" in text
    assert "sum to" not in text  # no scaling advice for a list of the wrong length
    code, out, err = cli("validate", "sft-huanhuan-mixed", "--set", "interleave_probs=0.9,0.2")
    assert code != 0 and "interleave_probs: 0.9,0.2: the probabilities sum to 1.1, not 1" in out + err


@pytest.mark.parametrize("verb", [["render"], ["validate"], ["run", "--dry-run"]])
def test_a_bad_mix_from_a_recipe_variable_names_the_variable(cli, verb):
    """The recipe renders interleave_probs from general_share: the error says which --set produced the bad weight."""
    code, out, err = cli(verb[0], "sft-huanhuan-mixed", *verb[1:], "--set", "general_share=1.5")
    assert code != 0
    assert ("interleave_probs: -0.5,1.5 has a negative weight (-0.5 for huanhuan) (from --set general_share=1.5)"
            in out + err)
    assert "it is rendered from general_share: change that value" in err
    code, out, err = cli("render", "sft-huanhuan-mixed", "--set", "general_share=0.5", "--set", "interleave_probs=0.9,0.2")
    assert code != 0 and "sum to 1.1, not 1\n" in err and "from --set general_share" not in err  # set directly


def test_one_dataset_with_a_weight_is_what_llamafactory_accepts():
    """LLaMA-Factory returns a single dataset as it is: its weight is never checked, so no rule refuses it."""
    from datasets import Dataset
    from llamafactory.data.data_utils import merge_dataset
    from llamafactory.hparams import DataArguments

    one = Dataset.from_dict({"x": [1, 2, 3]})
    args = DataArguments(dataset="a", mix_strategy="interleave_under", interleave_probs="0.5")
    assert merge_dataset([one], args, seed=0)["x"] == [1, 2, 3]
    config = {"dataset": "a", "mix_strategy": "interleave_under", "interleave_probs": "0.5"}
    assert not [f for f in validate_config(config) if "interleave" in f.rule]


def test_prepare_prints_the_expected_rows_per_source(tmp_path):
    proc = run_cli_subprocess("prepare", "--recipe", "sft-huanhuan-mixed", "--sample-data", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {n: sum(1 for _ in (tmp_path / "data" / f"{n}.jsonl").open()) for n in ("huanhuan", "belle_0.5m")}
    total = rows["huanhuan"] / 0.92  # huanhuan runs out first: 40 / 0.92 rows in all
    line = (f"sft-huanhuan-mixed stage sft: interleave_under: about {total:,.0f} rows: huanhuan {rows['huanhuan']} "
            f"(92%), belle_0.5m {total * 0.08:,.0f} (8%); stops when huanhuan runs out")
    assert line in proc.stdout


@pytest.mark.engine
def test_the_mixed_recipe_smoke_runs(tmp_path, tiny_model):
    env = {"LLF_RECIPES_CACHE": str(tiny_model.parent), "TOKENIZERS_PARALLELISM": "false"}
    assert run_cli_subprocess("prepare", "--recipe", "sft-huanhuan-mixed", "--sample", cwd=tmp_path, env=env).returncode == 0
    proc = run_cli_subprocess("run", "sft-huanhuan-mixed", "--smoke", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "saves" / "smoke" / "sft-huanhuan-mixed" / "sft"
    data = json.loads((out / "llf-run.json").read_text())
    assert data["status"] == "completed"
    assert data["config"]["mix_strategy"] == "interleave_under" and data["config"]["interleave_probs"] == "0.92,0.08"
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    # LLaMA-Factory's advice to concat instead is in the log, not on the terminal: the mix interleaves on purpose
    assert "We recommend using `mix_strategy=concat`" in (out / "llf-sft.log").read_text()
    assert "mix_strategy=concat" not in proc.stdout + proc.stderr

"""`merge` through mergekit on tiny models: the merged weights are checked against combinations computed here.

Soup and SLERP use two tiny models built from different seeds (their weights are nearly orthogonal, so SLERP and a
straight line differ clearly); TIES and DARE use task vectors set by hand; LoRA runs are exported before merging.
"""

import json
import shutil

import evalruns
import numpy as np
import pytest
import yaml
from conftest import run_cli_subprocess
from evalruns import ENV, poisoned_env

zhihu_runs = evalruns.zhihu_runs  # the session's tiny sft/dpo runs (see evalruns.py)

pytestmark = pytest.mark.engine
pytest.importorskip("mergekit", reason="needs the merge extra (mergekit)")

TENSOR = "model.layers.0.mlp.up_proj.weight"


def weights(model_dir):
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "model.safetensors"))


def save_weights(model_dir, tensors):
    from safetensors.numpy import save_file

    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def two_models(tiny_model, tmp_path_factory):
    from llf_recipes.smoke import build_tiny_model

    other = build_tiny_model(tmp_path_factory.mktemp("seed1") / "tiny", seed=1)
    return tiny_model, other


def merge(*argv):
    proc = run_cli_subprocess("merge", *argv, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_soup_is_the_weighted_average(two_models, tmp_path):
    a, b = two_models
    out = tmp_path / "soup"
    merge(a, b, "-o", out, "--method", "soup", "--weights", "1,3")
    got, wa, wb = weights(out), weights(a), weights(b)
    expected = 0.25 * wa[TENSOR].astype(np.float64) + 0.75 * wb[TENSOR].astype(np.float64)  # weights normalized
    np.testing.assert_allclose(got[TENSOR], expected, rtol=0, atol=1e-6)
    for key in wa:  # every tensor, not just the one we looked at
        np.testing.assert_allclose(got[key], 0.25 * wa[key] + 0.75 * wb[key], rtol=0, atol=1e-6, err_msg=key)
    record = json.loads((out / "llf-run.json").read_text())
    assert record["verb"] == "merge" and record["status"] == "completed"
    assert record["config"]["merge"]["merge_method"] == "linear" and (out / "tokenizer.json").is_file()
    again = merge(a, b, "-o", out, "--method", "soup", "--weights", "1,3")  # up to date: nothing to do
    assert again.stdout == f"merged model: {out} (up to date with its sources; --force merges again)\n"
    assert json.loads((out / "llf-run.json").read_text())["finished_at"] == record["finished_at"]
    changed = merge(a, b, "-o", out, "--method", "soup", "--weights", "1,1")  # another merge of the same models
    assert "merge (linear) -> " in changed.stdout and "up to date" not in changed.stdout  # merged again


def slerp(v0, v1, t):
    """Spherical interpolation of two flattened tensors (Shoemake 1985), in float64."""
    a, b = v0.astype(np.float64).ravel(), v1.astype(np.float64).ravel()
    theta = np.arccos(np.clip(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b)), -1.0, 1.0))
    return ((np.sin((1 - t) * theta) * a + np.sin(t * theta) * b) / np.sin(theta)).reshape(v0.shape)


def test_slerp_follows_the_arc(two_models, tmp_path):
    a, b = two_models
    out = tmp_path / "slerp"
    merge(a, b, "-o", out, "--method", "slerp", "--t", "0.3")
    got, wa, wb = weights(out), weights(a), weights(b)
    expected = slerp(wa[TENSOR], wb[TENSOR], 0.3)
    np.testing.assert_allclose(got[TENSOR], expected, rtol=0, atol=1e-6)
    straight = 0.7 * wa[TENSOR] + 0.3 * wb[TENSOR]
    assert np.abs(got[TENSOR] - straight).max() > 1e-3  # not a straight line: the arc keeps the norm up
    assert np.linalg.norm(got[TENSOR]) > np.linalg.norm(straight)


@pytest.fixture(scope="module")
def task_vectors(tiny_model, tmp_path_factory):
    """Base A; M1 = A + 0.01 and M2 = A - 0.004 on one tensor; M3 = A everywhere (no task vector)."""
    root = tmp_path_factory.mktemp("task")
    base = weights(tiny_model)
    made = {}
    for name, delta in (("m1", 0.01), ("m2", -0.004), ("m3", 0.0)):
        shutil.copytree(tiny_model, root / name)
        tensors = dict(base)
        tensors[TENSOR] = (base[TENSOR] + np.float32(delta)).astype(np.float32)
        save_weights(root / name, tensors)
        made[name] = root / name
    return tiny_model, made


def test_ties_keeps_the_elected_sign(task_vectors, tmp_path):
    """Deltas +0.01 and -0.004 disagree; the positive sum wins the election and only the agreeing delta is kept."""
    base, m = task_vectors
    out = tmp_path / "ties"
    merge(m["m1"], m["m2"], "-o", out, "--method", "ties", "--base", base, "--density", "1.0")
    got, wbase = weights(out), weights(base)
    np.testing.assert_allclose(got[TENSOR] - wbase[TENSOR], 0.01, atol=1e-6)
    other = next(k for k in wbase if k != TENSOR)
    np.testing.assert_array_equal(got[other], wbase[other])


def test_dare_drops_and_rescales(task_vectors, tmp_path):
    """DARE at density 0.5 drops about half of the task vector's entries and scales the kept ones up so that the
    vector keeps its L1 norm (mergekit's rescale); the same seed drops the same entries."""
    base, m = task_vectors
    runs = []
    for name in ("first", "second"):
        out = tmp_path / name
        merge(m["m1"], m["m3"], "-o", out, "--method", "dare", "--base", base, "--density", "0.5", "--seed", "7")
        runs.append(weights(out)[TENSOR])
    delta = runs[0].astype(np.float64) - weights(base)[TENSOR]
    kept = np.abs(delta) > 1e-6
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_allclose(delta[kept], 0.01 / kept.mean(), rtol=1e-3)  # each kept entry scaled by 1/share
    assert np.abs(delta).sum() == pytest.approx(0.01 * delta.size, rel=1e-3)  # L1 norm of the task vector kept
    np.testing.assert_array_equal(runs[0], runs[1])


def test_lora_runs_are_exported_then_merged(zhihu_runs, tmp_path):
    """Two LoRA runs: each adapter is merged into the base by `export`, then mergekit averages the two models;
    the result has a manifest, so eval tests it on the first run's held-out rows."""
    runs = tmp_path / "saves" / "zhihu"
    for stage in ("sft", "dpo"):
        shutil.copytree(zhihu_runs / "zhihu" / stage, runs / stage)
    out = tmp_path / "saves" / "soup"
    merge(runs / "sft", runs / "dpo", "-o", out, "--method", "soup")
    for stage in ("sft", "dpo"):
        exported = json.loads((runs / f"{stage}-merged" / "llf-run.json").read_text())
        assert exported["verb"] == "export" and exported["status"] == "completed"
    got, sft, dpo = weights(out), weights(runs / "sft-merged"), weights(runs / "dpo-merged")
    np.testing.assert_allclose(got[TENSOR], (sft[TENSOR] + dpo[TENSOR]) / 2, rtol=0, atol=1e-6)
    record = json.loads((out / "llf-run.json").read_text())
    assert record["model"]["template"] == "qwen" and record["source"]["run_dir"] == str((runs / "sft").resolve())
    results = tmp_path / "results.json"
    proc = run_cli_subprocess("eval", out, "--max-samples", "4", "--max-generation-samples", "1",
                              "--max-new-tokens", "4", "-o", results, "--no-progress", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    soup = json.loads(results.read_text())["soup"]
    assert soup["method"] == "merge" and soup["test_loss"] > 0 and soup["test_data"]["kind"] == "sft"


def test_merge_errors_name_the_problem(two_models, tmp_path, cli):
    a, b = two_models
    code, _, err = cli("merge", a, b, a, "-o", tmp_path / "x", "--method", "slerp")
    assert code == 2 and "exactly two" in err
    code, _, err = cli("merge", a, b, "-o", tmp_path / "x", "--method", "ties")
    assert code == 2 and "--base" in err
    code, _, err = cli("merge", a, b, "-o", tmp_path / "x", "--method", "soup", "--weights", "1,2,3")
    assert code == 2 and "3 weight(s) for 2 model(s)" in err
    wider = tmp_path / "wider"
    wider.mkdir()
    config = json.loads((a / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "hidden_size": 128}))
    code, _, err = cli("merge", a, wider, "-o", tmp_path / "x", "--method", "soup")
    assert code == 2 and "hidden_size" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("")
    code, _, err = cli("merge", a, b, "-o", tmp_path / "full", "--method", "soup")
    assert code == 2 and "not empty" in err
    assert (tmp_path / "full" / "something").is_file()


def test_merge_asks_for_mergekit_before_exporting_anything(zhihu_runs, tmp_path, cli, monkeypatch):
    import llf_recipes.cli.merge as verb

    runs = tmp_path / "saves" / "zhihu"
    for stage in ("sft", "dpo"):
        shutil.copytree(zhihu_runs / "zhihu" / stage, runs / stage)
    monkeypatch.setattr(verb, "find_spec", lambda name: None if name == "mergekit" else __import__("importlib.util")
                        .util.find_spec(name))
    code, out, err = cli("merge", runs / "sft", runs / "dpo", "-o", tmp_path / "soup", "--method", "soup")
    assert code == 2 and 'error: merging needs mergekit\n  fix: pip install "llf-recipes[merge]"' in err
    assert out == "" and not (runs / "sft-merged").exists() and not (tmp_path / "soup").exists()


def test_print_config_is_mergekit_yaml_without_torch(two_models, tmp_path):
    a, b = two_models
    proc = run_cli_subprocess("merge", a, b, "-o", tmp_path / "x", "--method", "soup", "--weights", "0.7,0.3",
                              "--print-config", env=poisoned_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    assert config["merge_method"] == "linear" and config["parameters"] == {"normalize": True}
    assert [m["parameters"]["weight"] for m in config["models"]] == [0.7, 0.3]
    assert [m["model"] for m in config["models"]] == [str(a), str(b)]
    assert not (tmp_path / "x").exists()

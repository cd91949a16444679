"""Digits that are not ASCII ('²', '٣') are not device indices, slot counts or checkpoint steps: a named error or a
non-match, never a traceback."""

import argparse

import pytest

from llf_recipes import manifest, preflight
from llf_recipes.cli.verb import device_type
from llf_recipes.errors import LlfError
from llf_recipes.hardware import parse_gpus, parse_hostfile_text


@pytest.mark.parametrize("spec", ["²", "0-²", "٣", "0,¹"])
def test_gpus_with_digit_lookalikes_is_a_usage_error(cli, spec):
    code, out, err = cli("render", "sft-huanhuan", "--gpus", spec)
    assert (code, out) == (2, "") and "Traceback" not in err
    assert err.startswith(f"error: --gpus {spec!r}") and "not a device index or a range" in err
    with pytest.raises(LlfError, match="not a device index"):
        parse_gpus(spec)


def test_slots_with_digit_lookalikes_names_the_line():
    with pytest.raises(LlfError, match=r"hosts:2: slots='²' is not a positive whole number"):
        parse_hostfile_text("node1 slots=8\nnode2 slots=²\n", source="hosts")


@pytest.mark.parametrize(("listed", "seen"), [("0,²", 1), ("²", 0)])
def test_cuda_visible_devices_stops_at_a_lookalike(monkeypatch, listed, seen):
    two = preflight.Inventory((preflight.Gpu(0, "A", 9.0), preflight.Gpu(1, "B", 9.0)), "test")
    monkeypatch.setattr(preflight, "cuda_inventory", lambda: two)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", listed)
    assert preflight.visible_cuda_devices() == seen


def test_device_option_refuses_a_lookalike_index():
    parse = device_type(with_index=True)
    assert parse("cuda:1") == "cuda:1"
    with pytest.raises(argparse.ArgumentTypeError, match="'cuda:²' is not a device"):
        parse("cuda:²")


def test_a_checkpoint_folder_with_a_lookalike_step_is_not_a_checkpoint(tmp_path):
    for name in ("checkpoint-²", "checkpoint-3"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "trainer_state.json").write_text("{}", encoding="utf-8")
    assert manifest.latest_checkpoint(tmp_path).name == "checkpoint-3"

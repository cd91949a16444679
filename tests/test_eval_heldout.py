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


def test_eval_off_a_terminal_prints_our_lines_and_logs_the_rest(tmp_path, catalog, tiny_model):
    """Not on a terminal: no redrawn bar (no carriage returns), one line per run scored, the results and the log."""
    from conftest import run_cli_subprocess

    data = make_data_dir(tmp_path / "data", catalog, ["huanhuan"])
    out = tmp_path / "out" / "results.json"
    proc = run_cli_subprocess("eval", tiny_model, "--template", "qwen", "--dataset", "huanhuan", "--data-dir", data,
                              "--limit", "3", "--max-generation-samples", "1", "--max-new-tokens", "4", "-o", out,
                              env={"DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"eval {tiny_model.name}: 4 sequence(s) scored in ")  # 3 rows + 1 sample
    assert lines[1] == f"wrote {out} (1 run(s)); the engine's output is in {out.parent / 'llf-eval.log'}"
    assert (out.parent / "llf-eval.log").is_file()


def test_what_libraries_print_while_scoring_goes_to_the_log(tmp_path):
    """Python's stderr, a logger's handler and a C library's writes to descriptor 2 go to the log; our lines to the
    screen (a process of its own: its descriptors are what is redirected)."""
    import subprocess
    import sys

    from conftest import ROOT

    log = tmp_path / "llf-eval.log"
    script = f"""
import logging, os, sys
from llf_recipes.eval.session import _screen
noisy = logging.getLogger("noisy-library")
noisy.addHandler(logging.StreamHandler(sys.stderr))
with _screen({str(log)!r}) as screen:
    print("python stderr", file=sys.stderr)
    print("python stdout")
    noisy.warning("Failed to load a kernel: pip install kernels")
    os.write(2, b"C library on fd 2\\n")
    print("eval run: 3 sequence(s) scored", file=screen)
print("after", file=sys.stderr)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "eval run: 3 sequence(s) scored\nafter\n")
    text = log.read_text()
    for noise in ("python stderr", "python stdout", "pip install kernels", "C library on fd 2"):
        assert noise in text

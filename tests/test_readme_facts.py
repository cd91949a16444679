"""What the README and the help say about the pack and smoke runs matches the code."""

import re
from pathlib import Path

from conftest import run_cli_subprocess

from llf_recipes.smoke import VERSION_TAG

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_the_benchmark_counts_are_the_packs(catalog):
    from llf_recipes.hardware import parse_hostfile
    from llf_recipes.render import Renderer

    recipes = catalog.recipes()
    layouts = [parse_hostfile(p) for p in catalog.hostfile_paths.values()]
    checks = sum(len(Renderer(r, layout, catalog=catalog).render_all()) for r in recipes for layout in layouts)
    counted = re.search(r"`validate --all --all-hostfiles` \((\d+) recipes, (\d+) stage x layout checks, (\d+) layouts\)",
                        README)
    assert counted, "the benchmark paragraph names the recipes, checks and layouts it validates"
    assert tuple(map(int, counted.groups())) == (len(recipes), checks, len(layouts)), \
        "update the benchmark paragraph of README.md (and re-measure) when the pack changes"


def test_the_smoke_model_named_in_examples_is_the_one_built():
    for tag in set(re.findall(r"tiny-qwen2-v\d+", README)):
        assert tag == VERSION_TAG


def test_smoke_help_and_show_agree_with_smoke_runs_keeping_4bit(cli):
    text = " ".join(run_cli_subprocess("run", "--help").stdout.split())
    assert "no quantization" not in text and "4-bit bitsandbytes stays" in text
    code, out, err = cli("show", "sft-huanhuan")
    assert code == 0, err
    assert "a CUDA GPU (4-bit QLoRA)" not in out and "--smoke keeps it on CPU" in out

"""What the user typed is what the config holds, and a recipe cannot make rendering run away.

Values from the command line reach the rendered YAML through the YAML emitter only: `#`, `: `, newlines, quotes and
unicode round-trip through LLaMA-Factory's own loader (OmegaConf); anchors and tags are refused. Rendering has a time
and memory budget; every way a template can fail is a one-line error naming the recipe file and line.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llf_recipes import templating

TRICKY = [
    "/data/qwen #v2",
    "qwen\nlora_rank: 999",
    "a: b",
    "it's \"quoted\"",
    "模型 – ünïcode ✓",
    "  padded  ",
    "- dash",
    "~user/x",
    "@at",
    "{not: closed",
    "*",
    "x\r\ny",
    "${HOME}",
]


def rendered_yaml(out: str):
    from omegaconf import OmegaConf  # LLaMA-Factory 0.9.5 reads its YAML with OmegaConf.load

    return OmegaConf.to_container(OmegaConf.create(out))


@pytest.mark.parametrize("value", TRICKY, ids=range(len(TRICKY)))
def test_set_values_round_trip_into_keys_and_recipe_variables(cli, value):
    # model_name_or_path is a recipe variable (goes through the template), run_name a plain key
    code, out, err = cli("render", "sft-huanhuan", "--set", f"model_name_or_path={value}", "--set", f"run_name={value}")
    assert code == 0, err
    config = rendered_yaml(out)
    assert config["model_name_or_path"] == value and config["run_name"] == value
    assert config["lora_rank"] == 8 and "#" not in "".join(k for k in config)


def test_output_root_with_a_hash_is_where_outputs_go(cli, tmp_path):
    root = str(tmp_path / "runs #1")
    import json

    code, out, err = cli("run", "sft-huanhuan", "--output-root", root, "--dry-run", "--json")
    assert code == (1 if any(p["input_problems"] for p in json.loads(out)) else 0), err

    plan = json.loads(out)[0]
    assert plan["output_dir"] == f"{root}/sft-huanhuan/sft"
    assert plan["files"] == [f"{root}/sft-huanhuan/sft/llf-sft.yaml"]


def test_numbers_booleans_and_lists_are_still_typed(cli):
    code, out, err = cli("render", "sft-huanhuan", "--set", "lora_rank=16", "--set", "learning_rate=5e-5",
                         "--set", "plot_loss=false", "--set", "eval_dataset=null", "--set", "my_list=[q_proj, 'v_proj', 3]", "--set", "my_map={a.b: 1, c: [x]}",
                         "--allow", "unknown-key")
    assert code == 0, err
    config = rendered_yaml(out)
    assert config["lora_rank"] == 16 and config["learning_rate"] == 5e-5 and config["plot_loss"] is False
    assert config["eval_dataset"] is None and config["my_list"] == ["q_proj", "v_proj", 3]
    assert config["my_map"] == {"a.b": 1, "c": ["x"]}


BOMB = "[" + ",".join(["&a0 [x,x,x,x,x,x,x,x,x]"] + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]"
                                                      for i in range(1, 9)]) + "]"


@pytest.mark.parametrize("verb", [["render"], ["validate"], ["run", "--dry-run"]])
@pytest.mark.parametrize("value", [BOMB, "{a: &x [1], b: *x}", "&a [1, 2]", "*a", "!!python/object:os.system x",
                                   "[!!binary aGk=]"])
def test_anchors_tags_and_nesting_in_set_are_refused_at_once(cli, verb, value):
    started = time.perf_counter()
    code, out, err = cli(verb[0], "sft-huanhuan", *verb[1:], "--set", f"lora_target={value}")
    assert time.perf_counter() - started < 2
    assert code == (1 if verb[0] == "validate" else 2) and "Traceback" not in err + out
    err = err + out
    assert "--set lora_target=" in err and "anchors, aliases and tags are not values" in err


def test_an_alias_bomb_inside_a_recipe_stops_with_its_file(cli, tmp_path):
    lines = ["a0: &a0 [x,x,x,x,x,x,x,x,x]"] + [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("stages: [s]\n---\nstage: sft\n" + "\n".join(lines) + "\n", encoding="utf-8")
    started = time.perf_counter()
    code, _, err = cli("render", str(recipe))
    assert time.perf_counter() - started < 5
    assert code == 2 and "expands to more than 1,000,000 values" in err and f"error: {recipe}:" in err


def write_recipe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "payload.yaml"
    path.write_text("stages: [s]\n---\nstage: sft\n" + body + "\n", encoding="utf-8")
    return path


def test_a_runaway_loop_stops_within_its_time_budget(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(templating, "TIME_BUDGET_S", 1.0)
    path = write_recipe(tmp_path, "x: {% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}1")
    started = time.perf_counter()
    code, _, err = cli("render", str(path))
    assert time.perf_counter() - started < 3
    assert code == 2 and f"{path}:4: stage s: rendering took longer than its budget of 1 s" in err


def test_a_huge_string_stops_before_it_is_built(cli, tmp_path):
    path = write_recipe(tmp_path, "x: {{ ('a' * 10**9)|length }}")
    code, _, err = cli("render", str(path))
    assert code == 2 and f"{path}:4:" in err and "would make 1,000,000,000 items" in err


def test_the_memory_budget_stops_a_template_that_grows_too_big(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(templating, "MEMORY_BUDGET", 64 << 20)
    path = write_recipe(tmp_path, "x: {{ ('a'|center(900000000))|length }}")
    code, _, err = cli("render", str(path))
    assert code == 2 and "memory budget (64 MB)" in err and f"{path}:4" in err


PAYLOADS = [
    "{{ stage_output.__globals__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ (1).__class__.__base__.__subclasses__() }}",
    "{{ 2 ** 99999999 }}",
    "{{ [0] * 10 ** 9 }}",
    "{{ range(10 ** 12)|list }}",
    "{% include 'other.yaml' %}",
    "{% import 'x' as y %}",
    "{% extends 'base' %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{{ 1 / 0 }}",
    "{{ 1 + 'a' }}",
    "{{ {}.update(a=1) }}",
    "{{ [].append(1) }}",
    "{{ '%s %s'|format(1) }}",
    "{{ (2 ** 64)|float|int * 'x' }}",
    "{{ 'a'|truncate(-1) }}",
    "{{ [1, 'a']|sort }}",
    "{{ undefined_name }}",
    "{{ x.y.z }}",
    "{% for %}",
    "{{ 1e400|int }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ self.__dict__ }}",
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_every_template_failure_is_one_line_with_the_file_and_line(cli, tmp_path, payload):
    path = write_recipe(tmp_path, f"x: {payload}")
    code, _, err = cli("render", str(path))
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[0].startswith(f"error: {path}:4"), err
    assert len([line for line in err.splitlines() if not line.startswith("  fix:")]) == 1, err


BROKEN_RECIPES = [
    (b"stages: [s]\n---\nstage: sft\nx: \xff\xfe\n", ":4: is not UTF-8 text"),
    (b"stages: [s]\nvars: [1, 2]\n---\nstage: sft\n", ": `vars` must be a mapping"),
    (b"stages: [s]\n---\n\tstage: sft\n", ":3: invalid YAML"),
    (b"stages: [s]\nvars: {global_batch_size: abc}\n---\nstage: sft\n", ": global_batch_size must be a positive whole"),
    (b"stages: [s]\n---\nstage: sft\nx: {% if %}\n", ":4: template error"),
    (b"stages: [s]\n---\nstage: sft\nx: [1\n", ":5: invalid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BROKEN_RECIPES, ids=range(len(BROKEN_RECIPES)))
def test_a_broken_recipe_is_one_line_with_its_file(cli, tmp_path, text, message):
    path = tmp_path / "broken.yaml"
    path.write_bytes(text)
    code, _, err = cli("render", str(path))
    assert code == 2 and err.splitlines()[0].startswith(f"error: {path}{message}"), err

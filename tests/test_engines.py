"""Engines: which engine runs a stage, the translations into its dialect, where it lives, and what stops a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli_subprocess

from llf_recipes import engines
from llf_recipes.engines.env import EngineEnv, parse_overrides, resolve
from llf_recipes.engines.translate import warmup_steps_as_ratio
from llf_recipes.errors import LlfError
from llf_recipes.launchers.local import engine_path


def test_stages_get_their_default_engine_and_ppo_is_translated(cli):
    code, out, err = cli("run", "rlhf-ultrafeedback", "--smoke", "--dry-run", "--json")
    assert code == (1 if any(p["input_problems"] for p in json.loads(out)) else 0), err
    plan = {p["stage"]: p for p in json.loads(out)}
    assert [plan[s]["engine"] for s in ("sft", "rm", "ppo")] == ["llamafactory", "llamafactory", "llamafactory-ppo"]
    # the recipe says warmup_steps: 0.1 (a share, in transformers 5); transformers 4 needs warmup_ratio
    assert plan["sft"]["config"]["warmup_steps"] == 0.03 and plan["sft"]["translations"] == []
    assert "warmup_steps" not in plan["ppo"]["config"] and plan["ppo"]["config"]["warmup_ratio"] == 0.1
    assert plan["ppo"]["translations"] == [
        "warmup_steps: 0.1 -> warmup_ratio: 0.1 (transformers 4 takes warmup_steps as whole steps only)"]
    assert plan["ppo"]["nodes"][0]["argv"][0].endswith("/bin/llamafactory-cli")
    assert plan["sft"]["nodes"][0]["argv"][0] == "llamafactory-cli"


def test_show_lists_each_stage_engine_and_translation(cli):
    code, out, _ = cli("show", "rlhf-ultrafeedback", "--json")
    stages = {s["name"]: s for s in json.loads(out)["stages"]}
    assert code == 0 and stages["ppo"]["engine"] == "llamafactory-ppo" and stages["sft"]["engine"] == "llamafactory"
    assert stages["ppo"]["translations"][0].startswith("warmup_steps: 0.1 -> warmup_ratio: 0.1")
    code, out, _ = cli("show", "rlhf-ultrafeedback")
    assert "translated for llamafactory-ppo: warmup_steps: 0.1 -> warmup_ratio: 0.1" in out


def test_dry_run_lists_the_engine_and_each_translation(cli):
    code, out, err = cli("run", "rlhf-ultrafeedback", "--dry-run", "--set", "ppo.warmup_steps=5.0")
    assert code == (1 if "would stop on" in out else 0), err
    ppo = out.split("stage ppo:")[1]
    assert "engine llamafactory-ppo:" in ppo and "translated warmup_steps: 5.0 -> 5 " in ppo


def test_warmup_translation():
    config = {"warmup_steps": 0.25}
    assert "warmup_ratio" in warmup_steps_as_ratio(config) and config == {"warmup_ratio": 0.25}
    assert warmup_steps_as_ratio(config) is None  # idempotent
    config = {"warmup_steps": 10.0}
    warmup_steps_as_ratio(config)
    assert config == {"warmup_steps": 10} and type(config["warmup_steps"]) is int
    for untouched in ({"warmup_steps": 7}, {"warmup_steps": 2.5}, {}):
        before = dict(untouched)
        assert warmup_steps_as_ratio(untouched) is None and untouched == before


def test_the_ppo_snapshot_validates_ppo_stages(cli, tmp_path):
    """A key 0.9.3 does not know is an error for the ppo stage, named with the engine's version."""
    code, _, err = cli("run", "rlhf-ultrafeedback", "--dry-run", "--set", "ppo.use_dft_loss=true")
    assert code == 1
    assert "use_dft_loss: is not a LLaMA-Factory 0.9.3 `train` argument" in err
    code, out, err = cli("run", "rlhf-ultrafeedback", "--dry-run", "--stage", "sft", "--set", "sft.use_dft_loss=true")
    assert "error:" not in err and code == (1 if "would stop on" in out else 0), err  # 0.9.5 has it
    code, out, err = cli("run", "rlhf-ultrafeedback", "--dry-run", "--set", "ppo.save_safetensors=true")
    assert "error:" not in err and code == (1 if "would stop on" in out else 0), err  # and 0.9.3 has keys 0.9.5 dropped


def test_a_recipe_stage_names_its_engine(tmp_path, cli):
    text = (ROOT / "recipes" / "rlhf-ultrafeedback.yaml").read_text(encoding="utf-8")
    (tmp_path / "recipes").mkdir()
    bad = text.replace("  - name: ppo\n", "  - name: ppo\n    engine: llamafactory\n")
    (tmp_path / "recipes" / "ppo-main.yaml").write_text(bad, encoding="utf-8")
    code, _, err = cli("run", "ppo-main", "--dry-run", "--recipe-dir", tmp_path / "recipes")
    assert code == 1 and "(rule ppo-needs-old-trl)" in err and "engine llamafactory-ppo" in err
    (tmp_path / "recipes" / "ppo-main.yaml").write_text(text.replace("  - name: ppo\n", "  - name: ppo\n    engine: llamafactori\n"))
    code, _, err = cli("run", "ppo-main", "--dry-run", "--recipe-dir", tmp_path / "recipes")
    assert code == 2 and "engine 'llamafactori' is unknown" in err and "did you mean 'llamafactory'" in err


def test_where_an_engine_lives(tmp_path, monkeypatch):
    monkeypatch.setenv("LLF_RECIPES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLF_RECIPES_CONFIG", str(tmp_path / "conf"))
    monkeypatch.delenv("LLF_ENGINE_LLAMAFACTORY_PPO", raising=False)
    env = resolve("llamafactory-ppo")
    assert env.source == "not installed" and not env.installed()
    assert env.python.startswith(str(tmp_path / "cache" / "engines" / "llamafactory-ppo-"))
    assert resolve("llamafactory").python == sys.executable and resolve("llamafactory").is_current
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "engines.yaml").write_text(f"llamafactory-ppo: {sys.executable}\n")
    assert resolve("llamafactory-ppo").source == str(tmp_path / "conf" / "engines.yaml")
    monkeypatch.setenv("LLF_ENGINE_LLAMAFACTORY_PPO", "/opt/env/bin/python")
    assert resolve("llamafactory-ppo").python == "/opt/env/bin/python"
    assert resolve("llamafactory-ppo", parse_overrides(["llamafactory-ppo=/x/bin/python"])).source == "--engine"
    with pytest.raises(LlfError, match="not NAME=PYTHON"):
        parse_overrides(["llamafactory-ppo"])
    with pytest.raises(LlfError, match="did you mean 'easyr1'"):
        parse_overrides(["easyrl=/x/python"])


def test_a_missing_engine_stops_run_before_anything_starts_with_the_install_command(tmp_path, tiny_model):
    from llf_recipes.smoke import VERSION_TAG

    cache = tmp_path / "cache"  # holds the tiny model, but no engine
    cache.mkdir()
    (cache / VERSION_TAG).symlink_to(tiny_model)
    proc = run_cli_subprocess("prepare", "--recipe", "rlhf-ultrafeedback", "--sample", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli_subprocess("run", "rlhf-ultrafeedback", "--smoke", cwd=tmp_path,
                              env={"LLF_RECIPES_CACHE": str(cache), "LLF_RECIPES_CONFIG": str(tmp_path / "conf"),
                                   "LLF_ENGINE_LLAMAFACTORY_PPO": ""})
    assert proc.returncode == 2
    assert "stage ppo runs on engine llamafactory-ppo, which is not installed" in proc.stderr
    assert "fix: llf-recipes engine install llamafactory-ppo" in proc.stderr
    assert not (tmp_path / "saves").exists()  # not even the sft stage started
    assert "Traceback" not in proc.stderr


def test_a_failed_install_leaves_nothing_behind(tmp_path):
    """uv cannot resolve the lock offline from an empty cache: the install fails, and no environment remains."""
    cache = tmp_path / "cache"
    env = {"LLF_RECIPES_CACHE": str(cache), "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    proc = run_cli_subprocess("engine", "install", "llamafactory-ppo", "--offline", env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "failed (exit" in proc.stderr and "nothing was left installed" in proc.stderr
    left = sorted(p.name for p in (cache / "engines").iterdir())
    assert [n for n in left if not n.endswith((".install.log", ".lock"))] == [], left
    assert not resolve_in(cache).installed()
    assert run_cli_subprocess("engine", "path", "llamafactory-ppo", env=env).returncode == 2


def resolve_in(cache: Path) -> EngineEnv:
    old = os.environ.get("LLF_RECIPES_CACHE")
    os.environ["LLF_RECIPES_CACHE"] = str(cache)
    try:
        return resolve("llamafactory-ppo")
    finally:
        if old is None:
            del os.environ["LLF_RECIPES_CACHE"]
        else:
            os.environ["LLF_RECIPES_CACHE"] = old


def test_engine_path_puts_the_programs_own_bin_first():
    path = os.pathsep.join(["/main/.venv/bin", "/usr/bin", "/eng/bin"])
    assert engine_path("/eng/bin/llamafactory-cli", path) == os.pathsep.join(["/eng/bin", "/main/.venv/bin", "/usr/bin"])
    assert engine_path("llamafactory-cli", path) == path


def test_engine_list_and_an_unknown_name(cli):
    code, out, _ = cli("engine", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == set(engines.ENGINES) == {"llamafactory", "llamafactory-ppo", "easyr1", "trl", "llf"}
    assert rows["llf"]["state"] == "ready"
    assert rows["llamafactory"]["state"] == "ready" and rows["llamafactory-ppo"]["snapshot"] == "0.9.3"
    code, _, err = cli("engine", "check", "llamafactory-pp")
    assert code == 2 and "did you mean 'llamafactory-ppo'" in err


def test_the_lock_pins_what_the_ppo_engine_needs():
    locked = engines.get("llamafactory-ppo").locked_versions()
    assert locked["llamafactory"] == "0.9.3" and locked["trl"] == "0.9.6" and locked["transformers"] == "4.52.4"
    assert locked["numpy"].startswith("1.") and locked["pyarrow"] == "20.0.0"  # 0.9.3 caps numpy below 2


# ------------------------------------------------------------------ in the PPO engine's own interpreter

pytest_engine = pytest.mark.engine


@pytest_engine
def test_engine_check_reports_the_locked_versions(ppo_engine, tiny_model):
    proc = run_cli_subprocess("engine", "check", "llamafactory-ppo", "--json",
                              env={"LLF_RECIPES_CACHE": str(tiny_model.parent)}, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln["text"] for ln in json.loads(proc.stdout)]
    assert "import llamafactory" in lines and "llamafactory 0.9.3" in lines and "trl 0.9.6" in lines


@pytest_engine
def test_torchrun_resolves_to_the_engines_own(ppo_engine, tmp_path):
    """With llf-recipes' environment first on PATH, a stage of the PPO engine still starts that engine's torchrun."""
    from llf_recipes.launchers.local import stream

    script = "import shutil, sys; print('TORCHRUN', shutil.which('torchrun')); print('PYTHON', sys.executable)"
    env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    old = os.environ["PATH"]
    os.environ["PATH"] = env["PATH"]
    try:
        code = stream([str(ppo_engine), "-c", script], {}, tmp_path / "log")
    finally:
        os.environ["PATH"] = old
    assert code == 0
    text = (tmp_path / "log").read_text()
    assert f"TORCHRUN {ppo_engine.parent / 'torchrun'}" in text
    assert (Path(sys.executable).parent / "torchrun").exists()  # the main environment has one too, ahead on PATH


@pytest_engine
def test_the_tiny_model_reads_the_same_in_transformers_4(ppo_engine, tiny_model):
    """Tokenizer and rope settings round-trip from transformers 5 (which saved it) to 4 (the PPO engine)."""
    from transformers import AutoConfig, AutoTokenizer

    text = "<|im_start|>user\n北京的天气怎么样？ What is a tokenizer?<|im_end|>"
    tok5 = AutoTokenizer.from_pretrained(tiny_model)
    cfg5 = AutoConfig.from_pretrained(tiny_model)
    probe = ("import json, sys\nfrom transformers import AutoConfig, AutoTokenizer\n"
             "tok = AutoTokenizer.from_pretrained(sys.argv[1]); cfg = AutoConfig.from_pretrained(sys.argv[1])\n"
             "print(json.dumps({'class': type(tok).__name__, 'ids': tok(sys.argv[2])['input_ids'], "
             "'rope_theta': cfg.rope_theta, 'rope_scaling': cfg.rope_scaling, 'eos': tok.eos_token, "
             "'template': tok.chat_template is not None, 'transformers': __import__('transformers').__version__}))")
    proc = subprocess.run([str(ppo_engine), "-c", probe, str(tiny_model), text], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    v4 = json.loads(proc.stdout.strip().splitlines()[-1])
    assert v4["transformers"].startswith("4.")
    assert v4["class"] == "PreTrainedTokenizerFast" and v4["eos"] == "<|im_end|>" and v4["template"]
    assert v4["ids"] == tok5(text)["input_ids"]
    assert v4["rope_theta"] == cfg5.rope_parameters["rope_theta"] == 1000000.0
    assert v4["rope_scaling"] is None


@pytest_engine
def test_the_0_9_3_snapshot_matches_the_ppo_engine(ppo_engine):
    """Regenerated by the same script, from the engine's own interpreter."""
    proc = subprocess.run([str(ppo_engine), "-m", "llf_recipes.schema.snapshot", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "llamafactory-0.9.3.json matches the installed package" in proc.stdout


PARSE_093 = r"""
import json, sys
import transformers.training_args as targs
targs.is_torch_bf16_gpu_available = lambda: True  # the configs target GPU machines; this one has none
from transformers import HfArgumentParser
from llamafactory.hparams import parser as lf_parser
parser = HfArgumentParser(lf_parser._TRAIN_ARGS)
out = []
for label, cfg in json.load(open(sys.argv[1])):
    _, _, training_args, finetuning_args, _ = parser.parse_dict(cfg, allow_extra_keys=False)
    ds = training_args.hf_deepspeed_config.config["zero_optimization"]["stage"] if cfg.get("deepspeed") else None
    out.append([label, finetuning_args.stage, training_args.warmup_ratio, ds])
print(json.dumps(out))
"""


@pytest_engine
def test_every_ppo_stage_parses_with_the_ppo_engines_own_llamafactory(ppo_engine, catalog, tmp_path):
    """Every stage that runs on llamafactory-ppo, on every bundled hostfile, parsed by 0.9.3's HfArgumentParser with
    extra keys refused and the DeepSpeed profile kept (read by transformers 4's DeepSpeed integration)."""
    from llf_recipes.hardware import parse_hostfile
    from llf_recipes.render import Renderer

    stages = []
    for recipe in catalog.recipes():
        for hf_name, path in catalog.hostfile_paths.items():
            for r in Renderer(recipe, parse_hostfile(path), catalog=catalog).render_all():
                if r.engine == "llamafactory-ppo":
                    cfg = dict(r.config)
                    if r.deepspeed_source:
                        cfg["deepspeed"] = str(r.deepspeed_source)
                    stages.append([f"{recipe.name}/{r.stage.name}@{hf_name}", cfg])
    assert len(stages) >= 3
    (tmp_path / "stages.json").write_text(json.dumps(stages))
    proc = subprocess.run([str(ppo_engine), "-c", PARSE_093, str(tmp_path / "stages.json")], capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [p[0] for p in parsed] == [s[0] for s in stages]
    assert all(p[1] == "ppo" and p[2] == 0.1 for p in parsed)
    assert any(p[3] is not None for p in parsed)  # multi-GPU layouts: DeepSpeed profiles, checked by transformers 4


def test_smoke_keeps_4bit_bitsandbytes_and_names_what_it_removes(catalog):
    from llf_recipes.hardware import cpu_layout
    from llf_recipes.render import Renderer
    from llf_recipes.smoke import apply_smoke, quantization_blocker

    (sft,) = Renderer(catalog.recipe("sft-huanhuan"), cpu_layout(), catalog=catalog).render_all()
    assert apply_smoke([sft], "/tiny") == {}
    assert (sft.config["quantization_bit"], sft.config["quantization_type"], sft.config["double_quantization"]) == \
        (4, "nf4", True)
    sft.config["quantization_bit"] = 8
    note = ("quantization_bit, quantization_method, quantization_type, double_quantization (8-bit bitsandbytes needs a "
            "GPU; 4-bit runs on CPU)")
    assert apply_smoke([sft], "/tiny") == {"sft": [note]}
    assert not any(k.startswith("quantization") or k == "double_quantization" for k in sft.config)
    assert quantization_blocker({"quantization_bit": 4, "quantization_method": "gptq"}) == "quantization_method gptq needs a GPU"



def test_smoke_drops_4bit_when_the_stage_evaluates_before_its_last_step(catalog):
    # bitsandbytes keeps 4-bit weights packed for CPU inference after an evaluation pass; the next training step fails.
    from llf_recipes.hardware import cpu_layout
    from llf_recipes.render import Renderer
    from llf_recipes.smoke import SMOKE_STEPS, apply_smoke

    def smoke(**keys):
        (sft,) = Renderer(catalog.recipe("sft-huanhuan"), cpu_layout(), catalog=catalog).render_all()
        return apply_smoke([sft], "/tiny", {None: keys}), sft.config

    removed, config = smoke(val_size=0.25, eval_strategy="steps", eval_steps=1)
    assert "evaluation pass" in removed["sft"][0] and "quantization_bit" not in config
    removed, config = smoke(val_size=0.25, eval_strategy="steps", eval_steps=SMOKE_STEPS)
    assert removed == {} and config["quantization_bit"] == 4  # evaluating at the last step only is fine
    removed, config = smoke(val_size=0.25, eval_strategy="epoch")
    assert "quantization_bit" not in config
    removed, config = smoke(eval_strategy="steps", eval_steps=1)  # nothing held out: no evaluation pass
    assert removed == {} and config["quantization_bit"] == 4

@pytest_engine
def test_qlora_recipe_smoke_trains_in_4bit_through_bitsandbytes_on_cpu(smoke_project, tiny_model):
    # the shared project's `run sft-huanhuan --smoke` (tests/test_engine_run.py runs it too): trained once per session
    env = {"LLF_RECIPES_CACHE": str(tiny_model.parent), "TOKENIZERS_PARALLELISM": "false"}
    proc = run_cli_subprocess("run", "sft-huanhuan", "--smoke", cwd=smoke_project, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "runs without" not in proc.stderr
    out = smoke_project / "saves" / "smoke" / "sft-huanhuan" / "sft"
    data = json.loads((out / "llf-run.json").read_text())
    assert (data["config"]["quantization_bit"], data["config"]["quantization_type"]) == (4, "nf4")
    assert data["config"]["double_quantization"] is True and data["versions"]["bitsandbytes"]
    assert "Quantizing model to 4 bit with bitsandbytes." in (out / "llf-sft.log").read_text()
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    assert (out / "adapter_model.safetensors").is_file()


def _v5_only_model(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2", "rope_parameters": {
        "rope_type": "default", "rope_theta": 1000000.0}}))
    (path / "tokenizer.json").write_text("{}")
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend"}))
    return path


def test_a_model_directory_only_transformers_5_reads_right_is_refused_naming_the_key(tmp_path):
    from llf_recipes.engines import handoff

    model = _v5_only_model(tmp_path / "m")
    with pytest.raises(LlfError) as err:
        handoff.check(model, 4, "llamafactory-ppo", "ppo")
    assert err.value.key == "rope_theta" and err.value.where == str(model / "config.json")
    assert [p[1] for p in handoff.problems(model, 4)] == ["rope_theta", "tokenizer_class"]
    assert handoff.problems(model, 5) == []
    assert len(handoff.make_portable(model)) == 2 and handoff.make_portable(model) == []
    assert handoff.problems(model, 4) == []
    config = json.loads((model / "config.json").read_text())
    assert config["rope_theta"] == 1000000.0 and config["rope_scaling"] is None and config["rope_parameters"]


def test_run_stops_before_handing_such_a_directory_to_the_ppo_engine(tmp_path):
    model = _v5_only_model(tmp_path / "m")
    proc = run_cli_subprocess("prepare", "--recipe", "rlhf-ultrafeedback", "--sample", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli_subprocess("run", "rlhf-ultrafeedback", "--stage", "ppo", "--engine", f"llamafactory-ppo={sys.executable}",
                              "--set", f"model_name_or_path={model}", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"{model / 'config.json'}: stage ppo hands {model} to engine llamafactory-ppo (transformers 4)" in proc.stderr
    assert "rope_theta" in proc.stderr and "python -m llf_recipes.engines.handoff" in proc.stderr
    assert not (tmp_path / "saves").exists()


def test_easyr1_leaves_out_what_needs_nvidia_gpus_on_a_cpu_machine():
    from llf_recipes.engines.install import requirements_here

    easyr1 = engines.get("easyr1")
    text, skipped = requirements_here(easyr1, gpu=False)
    assert skipped == ["flash-attn>=2.4.3", "vllm>=0.8.0"]
    assert "omegaconf>=2.3,<2.4" in text and "transformers>=4.54.0,<5.0.0" in text and "\nvllm" not in text
    assert requirements_here(easyr1, gpu=True) == (easyr1.lock_path.read_text(), [])
    assert requirements_here(engines.get("llamafactory-ppo"), gpu=False)[1] == []


@pytest_engine
def test_install_engines_installs_what_the_stages_need_before_the_first_starts(tmp_path, tiny_model):
    from llf_recipes.smoke import VERSION_TAG

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / VERSION_TAG).symlink_to(tiny_model)
    env = {"LLF_RECIPES_CACHE": str(cache), "LLF_RECIPES_CONFIG": str(tmp_path / "conf"), "LLF_ENGINE_LLAMAFACTORY_PPO": ""}
    assert run_cli_subprocess("prepare", "--recipe", "rlhf-ultrafeedback", "--sample", cwd=tmp_path, env=env).returncode == 0
    proc = run_cli_subprocess("run", "rlhf-ultrafeedback", "--smoke", "--stage", "ppo", "--install-engines", cwd=tmp_path,
                              env=env, timeout=1800)
    # the engine is installed first; then the stage stops, as it should, because sft and rm have not run
    assert "installed engine llamafactory-ppo in" in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2 and "reads the output of stage" in proc.stderr
    path = run_cli_subprocess("engine", "path", "llamafactory-ppo", env=env)
    assert path.returncode == 0 and path.stdout.strip().startswith(str(cache / "engines" / "llamafactory-ppo-"))

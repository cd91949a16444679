"""Small things a user notices: a warning printed once with the layouts it applies to, a file named once, a copied
recipe that says how it is found."""

from __future__ import annotations


def test_validate_on_every_layout_prints_a_warning_once_naming_the_layouts(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/ here: the grpo stage's rows are not prepared, on any layout
    code, out, err = cli("validate", "grpo-gsm8k", "--all-hostfiles")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(set(warnings)) >= 1
    missing = next(w for w in warnings if "gsm8k_grpo.jsonl does not exist yet" in w)
    assert missing.endswith("(on 1gpu, 1node-8gpu, 2node-8gpu)")
    assert "on 3 layout(s)" in out


def test_render_names_a_shared_deepspeed_file_once(cli, tmp_path):
    code, out, err = cli("render", "zhihu", "--gpus", "0,1", "--output-dir", tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(set(lines)) == 3 and sum("ds_z2" in line for line in lines) == 1


def test_cp_says_how_the_copy_is_found(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("cp", "sft-huanhuan", "recipes/my-sft.yaml")
    assert code == 0 and "it is recipe my-sft here (llf-recipes show my-sft)" in out
    assert cli("show", "my-sft")[0] == 0
    code, out, _ = cli("cp", "sft-huanhuan", "mine.yaml")
    assert code == 0 and "outside recipes/ it is found by path (llf-recipes show mine.yaml)" in out
    assert cli("show", "mine.yaml")[0] == 0


def test_register_says_when_nothing_changed(cli, tmp_path):
    code, out, _ = cli("register", "zhihu_sft", "--data-dir", tmp_path)
    assert code == 0 and out.endswith(f"{tmp_path}/dataset_info.json: 1 entry written\n")
    code, out, _ = cli("register", "zhihu_sft", "--data-dir", tmp_path)
    assert code == 0 and out.endswith("unchanged, every entry was already registered as given\n")


def test_an_engine_off_the_registry_asks_for_its_checkout(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LLF_RECIPES_CACHE", str(tmp_path / "cache"))
    for var in ("LLF_ENGINE_EASYR1", "LLF_EASYR1_PYTHON"):
        monkeypatch.delenv(var, raising=False)
    code, _, err = cli("engine", "install", "easyr1")
    assert code == 2 and "engine easyr1 is not on the package registry" in err and "Traceback" not in err
    assert "git clone https://github.com/hiyouga/EasyR1 && llf-recipes engine install easyr1 --source EasyR1" in err
    assert not (tmp_path / "cache" / "engines").exists()  # nothing started


def test_a_smoke_run_lists_its_own_keys_under_smoke_not_under_set(catalog):
    """The written config of a smoke run: what smoke added under its own block, a --set key the recipe lacks under
    the overrides block, a --set of a recipe key in that key's block; LLaMA-Factory reads the same keys either way."""
    import yaml

    from llf_recipes.hardware import cpu_layout
    from llf_recipes.render import Overrides, Renderer
    from llf_recipes.smoke import apply_smoke

    recipe = catalog.recipe("sft-huanhuan")
    for sets in ([], ["learning_rate=1e-3", "seed=7"]):
        overrides = Overrides.parse(sets, recipe)
        stages = Renderer(recipe, cpu_layout(), overrides, catalog).render_all()
        apply_smoke(stages, "/models/tiny", overrides.keys)
        text = stages[0].to_yaml()
        blocks = {}
        for part in text.split("\n### ")[1:]:
            name, _, body = part.partition("\n")
            blocks[name] = yaml.safe_load(body) or {}
        assert {"max_steps", "max_samples"} <= set(blocks["smoke run (--smoke)"])
        assert ("overrides (--set)" in blocks) == bool(sets)
        if sets:
            assert blocks["overrides (--set)"] == {"seed": 7} and blocks["train"]["learning_rate"] == 1e-3
        assert yaml.safe_load(text) == stages[0].config

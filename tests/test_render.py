import json
from pathlib import Path

import pytest

from llf_recipes import yamlio
from llf_recipes.errors import LlfError
from llf_recipes.hardware import parse_gpus, parse_hostfile, parse_hostfile_text
from llf_recipes.recipe import load_recipe
from llf_recipes.render import Overrides, Renderer, write_stage

EXPECTED = {
    "sft-huanhuan", "sft-huanhuan-full", "zhihu", "sft-belle", "rlhf-ultrafeedback", "dpo-ultrafeedback",
    "orpo-ultrafeedback", "simpo-ultrafeedback", "kto-ultrafeedback", "pt-belle",
}


def test_pack_has_every_recipe_and_every_stage(catalog):
    assert EXPECTED <= set(catalog.recipe_names())
    lf_stages = set()
    for recipe in catalog.recipes():
        for r in Renderer(recipe, parse_gpus("0"), catalog=catalog).render_all():
            if r.verb != "train":  # export stages merge, grpo stages are GRPO settings (tests/test_grpo_*.py)
                continue
            lf_stages.add(r.config["stage"])
            assert r.config.get("template") == "qwen" or r.config["stage"] == "pt"
    assert lf_stages == {"pt", "sft", "rm", "ppo", "dpo", "kto"}


def test_global_batch_is_identical_on_every_layout(catalog):
    for recipe in catalog.recipes():
        seen: dict[str, set[int]] = {}
        for path in catalog.hostfile_paths.values():
            layout = parse_hostfile(path)
            for r in Renderer(recipe, layout, catalog=catalog).render_all():
                if r.verb != "train":
                    continue
                cfg = r.config
                effective = cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"] * layout.world_size
                seen.setdefault(r.stage.name, set()).add(effective)
        for stage, sizes in seen.items():
            assert len(sizes) == 1, f"{recipe.name}/{stage}: global batch differs across layouts: {sizes}"


def test_layout_that_cannot_keep_the_batch(catalog):
    layout = parse_hostfile_text("a slots=8\nb slots=8\nc slots=8\n", source="three-nodes")
    with pytest.raises(LlfError) as exc:
        Renderer(catalog.recipe("sft-huanhuan"), layout, catalog=catalog).render_all()
    assert "16 does not divide over 24 devices" in str(exc.value)


def test_hf_sft_huanhuan_values(catalog):
    r = Renderer(catalog.recipe("sft-huanhuan"), parse_gpus("0"), catalog=catalog).render("sft")
    c = r.config
    assert (c["quantization_bit"], c["quantization_type"], c["double_quantization"]) == (4, "nf4", True)
    assert (c["lora_rank"], c["lora_alpha"], c["lora_dropout"], c["lora_target"]) == (8, 16, 0.05, "all")
    assert c["learning_rate"] == pytest.approx(1e-4) and isinstance(c["learning_rate"], float)
    assert c["bf16"] is True and c["fp16"] is False
    assert "deepspeed" not in c  # one GPU: no DeepSpeed


def test_later_stage_reads_earlier_output_by_name(catalog):
    rs = Renderer(catalog.recipe("rlhf-ultrafeedback"), parse_gpus("0,1"), Overrides.parse(["output_root=/runs"], catalog.recipe("rlhf-ultrafeedback")), catalog).render_all()
    by = {r.stage.name: r for r in rs}
    assert by["ppo"].config["adapter_name_or_path"] == by["sft"].config["output_dir"] == "/runs/rlhf-ultrafeedback/sft"
    assert by["ppo"].config["reward_model"] == by["rm"].config["output_dir"]
    assert by["ppo"].needs == ["rm", "sft"]
    # a per-stage output_dir override moves the reference with it
    recipe = catalog.recipe("zhihu")
    r = Renderer(recipe, parse_gpus("0"), Overrides.parse(["sft.output_dir=/elsewhere"], recipe), catalog).render("dpo")
    assert r.config["adapter_name_or_path"] == "/elsewhere"


def test_overrides_typed_and_removed(catalog):
    recipe = catalog.recipe("sft-huanhuan")
    ov = Overrides.parse(["lora_rank=16", "learning_rate=5e-5", "~quantization_bit", "flash_attn=fa2",
                          "model_name_or_path=/m", "precision=fp16"], recipe)
    c = Renderer(recipe, parse_gpus("0"), ov, catalog).render_all()[0].config
    assert c["lora_rank"] == 16 and c["learning_rate"] == 5e-5 and c["flash_attn"] == "fa2"
    assert "quantization_bit" not in c and c["model_name_or_path"] == "/m"
    assert c["fp16"] is True and c["bf16"] is False


def test_override_errors(catalog):
    recipe = catalog.recipe("zhihu")
    with pytest.raises(LlfError, match="(?s)no stage .dop.*did you mean dpo.learning_rate"):
        Overrides.parse(["dop.learning_rate=1"], recipe)
    with pytest.raises(LlfError, match="not key=value"):
        Overrides.parse(["learning_rate"], recipe)
    with pytest.raises(LlfError, match="did you mean ~quantization_bit"):
        Renderer(recipe, parse_gpus("0"), Overrides.parse(["~quantisation_bit"], recipe), catalog).render_all()


def test_template_typo_names_variable_and_line(tmp_path, catalog):
    src = (Path(catalog.recipe("sft-huanhuan").path)).read_text(encoding="utf-8")
    bad = src.replace("{{ model_name_or_path }}", "{{ model_name_or_pth }}")
    path = tmp_path / "typo.yaml"
    path.write_text(bad, encoding="utf-8")
    line = bad.splitlines().index("model_name_or_path: {{ model_name_or_pth }}") + 1
    with pytest.raises(LlfError) as exc:
        Renderer(load_recipe(path), parse_gpus("0"), catalog=catalog).render("sft")
    assert f"typo.yaml:{line}" in str(exc.value)
    assert "model_name_or_pth" in str(exc.value) and "model_name_or_path" in str(exc.value)


def test_sandbox_blocks_python_internals(tmp_path, catalog):
    path = tmp_path / "evil.yaml"
    path.write_text("stages: [s]\n---\nx: {{ stage_output.__globals__ }}\n", encoding="utf-8")
    with pytest.raises(LlfError, match="SecurityError: .*__globals__") as exc:
        Renderer(load_recipe(path), parse_gpus("0"), catalog=catalog).render("s")
    assert exc.value.where == f"{path}:3"


def test_recipe_header_errors(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("descripton: x\nstages: [a]\n---\nstage: sft\n", encoding="utf-8")
    with pytest.raises(LlfError, match="did you mean 'description'"):
        load_recipe(p)
    p.write_text("stages: [a, b]\n---\nstage: sft\n", encoding="utf-8")
    with pytest.raises(LlfError, match="lists 2 stage"):
        load_recipe(p)


def test_deepspeed_json_written_beside_yaml(tmp_path, catalog):
    r = Renderer(catalog.recipe("zhihu"), parse_hostfile(catalog.hostfile("2node-8gpu")), catalog=catalog).render("sft")
    written = write_stage(r, tmp_path / "sft.yaml")
    cfg = yamlio.load((tmp_path / "sft.yaml").read_text(encoding="utf-8"))
    ds = json.loads(Path(cfg["deepspeed"]).read_text(encoding="utf-8"))
    assert Path(cfg["deepspeed"]).parent == tmp_path and Path(cfg["deepspeed"]) in written
    assert ds["zero_optimization"]["stage"] == 3
    text = (tmp_path / "sft.yaml").read_text(encoding="utf-8")
    assert "### model" in text and "### train" in text  # LLaMA-Factory's own layout


def test_yaml_floats_are_numbers():
    assert yamlio.load("lr: 1e-4\nb: 5.0e-5\nc: '1e-4'\n") == {"lr": 1e-4, "b": 5e-5, "c": "1e-4"}
    assert yamlio.scalar("1e-6") == 1e-6 and yamlio.scalar("true") is True and yamlio.scalar("a,b") == "a,b"


def test_every_recipe_lists_every_dataset_its_stages_read(catalog):
    """`prepare --recipe NAME` prepares the header's `datasets`: a stage reading another one would fail at run time."""
    from llf_recipes.hardware import parse_gpus
    from llf_recipes.render import Overrides, Renderer

    for name in catalog.recipe_names():
        recipe = catalog.recipe(name)
        if any(s.verb not in ("train", "export", "chat") for s in recipe.stages):
            continue  # GRPO stages read their data through their own backend
        for rendered in Renderer(recipe, parse_gpus("0"), Overrides(), catalog).render_all():
            for key in ("dataset", "eval_dataset"):
                for used in filter(None, str(rendered.config.get(key) or "").split(",")):
                    assert used.strip() in recipe.datasets, f"{name}/{rendered.stage.name} reads {used} ({key})"

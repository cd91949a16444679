import json
from pathlib import Path

from conftest import run_cli_subprocess
from test_render import EXPECTED

from llf_recipes import yamlio


def test_list_table_and_json(cli):
    code, out, _ = cli("list")
    assert code == 0
    for name in EXPECTED:
        assert name in out
    code, out, _ = cli("list", "--json")
    data = json.loads(out)
    assert {d["name"] for d in data} >= EXPECTED
    ultrafeedback = next(d for d in data if d["name"] == "rlhf-ultrafeedback")
    assert ultrafeedback["stages"] == ["sft", "rm", "ppo"]  # lists as JSON arrays, not joined text
    assert isinstance(ultrafeedback["datasets"], list) and "ultrafeedback_prefs" in ultrafeedback["datasets"]
    assert "sft -> rm -> ppo" in cli("list")[1]  # the table shows the chain


def test_list_hostfiles_and_datasets(cli):
    code, out, _ = cli("list", "--hostfiles", "--json")
    layouts = {d["name"]: d["layout"] for d in json.loads(out)}
    assert next(d["hosts"] for d in json.loads(out) if d["name"] == "1gpu") == ["localhost"]
    assert layouts["1gpu"] == "1 node x 1 GPU" and layouts["2node-8gpu"] == "2 nodes x 8 GPUs = 16"
    code, out, _ = cli("list", "--datasets", "--json")
    assert code == 0
    names = {d["name"] for d in json.loads(out)}
    assert {"huanhuan", "zhihu_rlhf", "zhihu_sft", "belle_0.5m", "belle_2m", "ultrafeedback_prefs", "ultrafeedback_kto"} <= names


def test_show(cli):
    code, out, _ = cli("show", "zhihu")
    assert code == 0
    assert "dpo" in out and "reads sft" in out and "model_name_or_path" in out and "liyucheng/zhihu_rlhf_3k" in out
    assert "bitsandbytes" in out
    code, out, _ = cli("show", "rlhf-ultrafeedback", "--json")
    info = json.loads(out)
    assert [s["lf_stage"] for s in info["stages"]] == ["sft", "rm", "ppo"]
    assert info["stages"][2]["needs"] == ["rm", "sft"]


def test_unknown_recipe_suggests(cli):
    code, _, err = cli("show", "sft-huanhaun")
    assert code == 2 and "did you mean 'sft-huanhuan'" in err


def test_cp_refuses_to_overwrite(cli, tmp_path):
    code, _, _ = cli("cp", "sft-huanhuan", tmp_path)
    assert code == 0 and (tmp_path / "sft-huanhuan.yaml").is_file()
    (tmp_path / "sft-huanhuan.yaml").write_text("edited", encoding="utf-8")
    code, _, err = cli("cp", "sft-huanhuan", tmp_path)
    assert code == 2 and "--force" in err
    assert (tmp_path / "sft-huanhuan.yaml").read_text(encoding="utf-8") == "edited"
    code, _, _ = cli("cp", "sft-huanhuan", tmp_path, "--force")
    assert code == 0 and "### model" in (tmp_path / "sft-huanhuan.yaml").read_text(encoding="utf-8")


def test_project_recipes_shadow_bundled(cli, tmp_path):
    cli("cp", "sft-huanhuan", tmp_path / "mine.yaml")
    p = tmp_path / "mine.yaml"
    p.write_text(p.read_text(encoding="utf-8").replace("lora_rank: 8", "lora_rank: 32"), encoding="utf-8")
    code, out, _ = cli("render", "mine", "--recipe-dir", tmp_path)
    assert code == 0 and yamlio.load(out)["lora_rank"] == 32
    (tmp_path / "sft-huanhuan.yaml").write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
    code, out, _ = cli("render", "sft-huanhuan", "--recipe-dir", tmp_path)
    assert yamlio.load(out)["lora_rank"] == 32


def test_render_stdout_is_plain_llamafactory_yaml(cli):
    code, out, _ = cli("render", "sft-huanhuan", "--gpus", "0,1,2,3", "--set", "lora_rank=16")
    assert code == 0
    cfg = yamlio.load(out)
    assert cfg["lora_rank"] == 16 and cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"] * 4 == 16
    assert cfg["deepspeed"].endswith("ds_z2_config.json") and Path(cfg["deepspeed"]).is_file()
    assert "{{" not in out


def test_render_to_directory(cli, tmp_path):
    code, _, _ = cli("render", "zhihu", "--hostfile", "2node-8gpu", "-o", tmp_path)
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dpo.yaml", "ds_z3_config.json", "sft.yaml"]
    dpo = yamlio.load((tmp_path / "dpo.yaml").read_text(encoding="utf-8"))
    assert dpo["adapter_name_or_path"] == "saves/zhihu/sft"
    assert json.loads(Path(dpo["deepspeed"]).read_text())["zero_optimization"]["stage"] == 3


def test_render_refuses_invalid_and_writes_nothing(cli, tmp_path):
    code, _, err = cli("render", "sft-huanhuan", "--set", "lerning_rate=1e-4", "-o", tmp_path / "o")
    assert code == 1 and "lerning_rate" in err and "learning_rate" in err
    assert not (tmp_path / "o").exists()


def test_validate_all_on_all_hostfiles(cli):
    code, out, err = cli("validate", "--all", "--all-hostfiles")
    assert code == 0, err
    assert "recipe(s) on 3 layout(s)" in out and "all valid" in out


def test_validate_reports_stage_and_key(cli):
    code, _, err = cli("validate", "zhihu", "--set", "dpo.pref_loss=hinge")
    assert code == 1
    assert "[zhihu/dpo] pref_loss" in err and "pref-loss-fallback" in err
    code, _, err = cli("validate", "zhihu", "--set", "dpo.pref_loss=hinge", "--allow", "pref-loss-fallback")
    assert code == 0 and "warning:" in err


def test_validate_plain_yaml(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("FORCE_TORCHRUN", raising=False)
    good = tmp_path / "good.yaml"
    good.write_text("model_name_or_path: m\nstage: sft\ndo_train: true\ndataset: huanhuan\ntemplate: qwen\noutput_dir: o\n", encoding="utf-8")
    code, out, _ = cli("validate", good)
    assert code == 0 and "ok:" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text() + "deepspeed: ds.json\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # LLaMA-Factory reads a relative deepspeed path from where it starts
    code, _, err = cli("validate", bad)
    assert code == 1 and "ds.json does not exist" in err
    (tmp_path / "ds.json").write_text('{"train_batch_size": "auto", "zero_optimization": {"stage": 2}}', encoding="utf-8")
    code, _, err = cli("validate", bad)
    assert code == 1 and "deepspeed" in err and "FORCE_TORCHRUN" in err
    monkeypatch.setenv("FORCE_TORCHRUN", "1")
    assert cli("validate", bad)[0] == 0


def test_validate_broken_hostfile_names_line(cli, tmp_path):
    hf = tmp_path / "hosts"
    hf.write_text("a slots=8\nb slots=eight\n", encoding="utf-8")
    code, _, err = cli("validate", "sft-huanhuan", "--hostfile", hf)
    assert code == 2 and f"{hf}:2" in err


def test_dry_run_prints_argv_and_env_per_node(cli):
    code, out, _ = cli("run", "zhihu", "--hostfile", "2node-8gpu", "--dry-run", "--json")
    plan = json.loads(out)
    assert code == (1 if any(p["input_problems"] for p in plan) else 0)
    assert [s["stage"] for s in plan] == ["sft", "dpo"]
    for stage in plan:
        assert [n["env"]["NODE_RANK"] for n in stage["nodes"]] == ["0", "1"]
        for node in stage["nodes"]:
            env = node["env"]
            assert env["FORCE_TORCHRUN"] == "1" and env["NNODES"] == "2" and env["NPROC_PER_NODE"] == "8"
            assert env["MASTER_ADDR"] == "node1" and env["MASTER_PORT"] == "29500"
            assert env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
            assert node["argv"] == ["llamafactory-cli", "train", f"saves/zhihu/{stage['stage']}/llf-{stage['stage']}.yaml"]
    assert plan[1]["config"]["adapter_name_or_path"] == plan[0]["output_dir"]


def test_dry_run_single_gpu_and_npu(cli):
    code, out, _ = cli("run", "sft-huanhuan", "--gpus", "3", "--dry-run", "--json")
    (stage,) = json.loads(out)
    (node,) = stage["nodes"]
    assert node["env"] == {"CUDA_VISIBLE_DEVICES": "3"} and stage["torchrun"] is False
    code, out, _ = cli("run", "sft-huanhuan", "--gpus", "0,1", "--device", "npu", "--dry-run", "--master-port", "29611")
    assert "ASCEND_RT_VISIBLE_DEVICES=0,1" in out and "MASTER_PORT=29611" in out and "CUDA_VISIBLE_DEVICES" not in out
    code, out, _ = cli("run", "sft-huanhuan-full", "--gpus", "0", "--dry-run")
    assert code == (1 if "would stop on" in out else 0)
    assert "FORCE_TORCHRUN=1" in out and "ds_z2_offload_config.json" in out  # DeepSpeed on one GPU needs torchrun


def test_help_has_examples():
    proc = run_cli_subprocess("render", "--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout and "llf-recipes render sft-huanhuan" in proc.stdout

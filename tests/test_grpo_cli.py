"""`run` and `validate` with grpo stages: the multi-node EasyR1 plan (Ray per node, then the main command), the
backend choice, and the quick-verb promise (no torch)."""

import json
import os

import pytest
from conftest import run_cli_subprocess


@pytest.fixture
def project(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLF_EASYR1_PYTHON", raising=False)  # the plans below use the default interpreter name
    code, _, err = cli("prepare", "gsm8k_grpo", "--sample", "--data-dir", "data")
    assert code == 0, err
    return tmp_path


def test_two_node_easyr1_dry_run_prints_ray_per_node_then_the_main_command(cli, project):
    code, out, err = cli("run", "grpo-gsm8k", "--backend", "easyr1", "--hostfile", "2node-8gpu", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    steps = [line.strip() for line in lines if line.strip().startswith(("ray on", "run on", "then Ray"))]
    config = project / "saves/grpo-gsm8k/grpo/llf-easyr1.yaml"
    # Ray in the foreground on every node (so it lives exactly as long as the run), the head first
    assert steps == [
        "ray on node 0 (node1, head, first): CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 ray start --block --head --port=6379 --num-gpus=8",
        "ray on node 1 (node2, worker): CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 ray start --block --address=node1:6379 --num-gpus=8",
        ("run on node 0 (node1): RAY_ADDRESS=node1:6379 CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 PYTHONUNBUFFERED=1 python3 -m "
         f"verl.trainer.main config={config}"),
        "then Ray stops on every node (2) when the run ends",
    ]
    assert "stage grpo: grpo with easyr1" in out
    # every file, with the config, the prompt template and the reward module in full
    for name in ("easyr1_data/train.jsonl", "easyr1_data/val.jsonl", "format_prompt.jinja", "reward.py", "llf-easyr1.yaml"):
        assert f"write {project / 'saves/grpo-gsm8k/grpo' / name}" in out
    assert "|   nnodes: 2" in out and "|   n_gpus_per_node: 8" in out and "{{ content | trim }}" in out
    assert "compute_score" in out and "28 training rows" in out
    assert not (project / "saves").exists()  # a dry run writes nothing


def test_easyr1_interpreter_is_configurable(cli, project, monkeypatch):
    monkeypatch.setenv("LLF_EASYR1_PYTHON", "/opt/easyr1/bin/python")
    code, out, err = cli("run", "grpo-gsm8k", "--backend", "easyr1", "--hostfile", "2node-8gpu", "--dry-run", "--json")
    assert code == 0, err
    (plan,) = json.loads(out)
    assert plan["backend"] == "easyr1"
    assert plan["nodes"][0]["argv"][:3] == ["/opt/easyr1/bin/python", "-m", "verl.trainer.main"]
    assert [n["argv"][:4] for n in plan["ray"]["nodes"]] == [["/opt/easyr1/bin/ray", "start", "--block", "--head"],
                                                             ["/opt/easyr1/bin/ray", "start", "--block", "--address=node1:6379"]]
    assert plan["ray"]["accelerators"] == 16
    assert plan["engine_config"]["trainer"]["nnodes"] == 2
    code, out, _ = cli("run", "grpo-gsm8k", "--backend", "easyr1", "--gpus", "0", "--dry-run", "--json",
                       "--set", "easyr1_python=/srv/venv/bin/python3")
    (plan,) = json.loads(out)
    assert plan["nodes"][0]["argv"][0] == "/srv/venv/bin/python3" and "ray" not in plan  # one node: ray.init() alone


def test_backend_choice(cli, project):
    _, out, _ = cli("run", "grpo-gsm8k", "--hostfile", "2node-8gpu", "--dry-run", "--json")
    assert json.loads(out)[0]["backend"] == "easyr1"  # across nodes by default
    code, out, _ = cli("run", "grpo-gsm8k", "--gpus", "0", "--dry-run", "--json")
    (plan,) = json.loads(out)
    assert plan["backend"] == "trl" and plan["nodes"][0]["argv"][1:3] == ["-m", "llf_recipes.engines.trl.backend"]
    code, out, err = cli("run", "grpo-gsm8k", "--backend", "trl", "--hostfile", "2node-8gpu", "--dry-run")
    assert code == 1 and "the TRL backend runs on one node" in err and "--backend easyr1" in err


def test_trl_on_several_gpus_of_one_node_goes_through_torchrun(cli, project):
    code, out, err = cli("run", "grpo-gsm8k", "--backend", "trl", "--gpus", "0,1", "--dry-run", "--json")
    assert code == 0, err
    (plan,) = json.loads(out)
    argv = plan["nodes"][0]["argv"]
    assert argv[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node=2"] and plan["nodes"][0]["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    grpo = plan["engine_config"]["grpo_config"]
    # 16 prompts x 4 answers per update over 2 GPUs = 32 each: micro 4 x 8 accumulation; a rollout is 8 micro-batches.
    assert (grpo["per_device_train_batch_size"], grpo["gradient_accumulation_steps"], grpo["steps_per_generation"]) == (4, 8, 8)


def test_launcher_print_runs_nothing_and_prints_each_step(cli, project):
    code, out, err = cli("run", "grpo-gsm8k", "--backend", "easyr1", "--hostfile", "2node-8gpu", "--launcher", "print")
    assert code == 0, err
    starts = [line for line in out.splitlines() if " start " in line and "ray" in line]
    assert len(starts) == 2 and "--head" in starts[0] and "--address=node1:6379" in starts[1]
    assert "--block" not in out  # by hand, ray start returns and the line after it runs
    lines = out.splitlines()
    # the head before the worker, the run after both, Ray's stop last
    order = [i for i, line in enumerate(lines)
             if line.startswith("cd ") and ("--head" in line or "--address=node1" in line or "verl.trainer.main" in line)]
    assert len(order) == 3 and order == sorted(order) and "--head" in lines[order[0]]
    assert "RAY_ADDRESS=node1:6379" in lines[order[2]] and "start first" in out and "ray stop" in lines[-1]
    run_dir = project / "saves/grpo-gsm8k/grpo"
    assert (run_dir / "llf-easyr1.yaml").is_file() and (run_dir / "reward_lib/llf_recipes/grpo/rewards.py").is_file()
    assert json.loads((run_dir / "llf-run.json").read_text())["status"] == "planned"


def test_validate_checks_grpo_stages_on_every_layout(cli, project):
    code, out, err = cli("validate", "grpo-gsm8k", "sft-grpo-gsm8k", "--all-hostfiles")
    assert code == 0, err
    assert "validated 12 stage(s) of 2 recipe(s) on 3 layout(s)" in out and "all valid" in out
    code, out, err = cli("validate", "grpo-gsm8k", "--set", "grpo.rewards=[correctnes]")
    assert code == 1 and "no built-in reward 'correctnes'" in err and "did you mean 'correctness'" in err


def test_grpo_dry_run_does_not_import_torch(project, tmp_path):
    poison = tmp_path / "poison"
    for mod in ("torch", "transformers", "trl", "llamafactory"):
        (poison / mod).mkdir(parents=True)
        (poison / mod / "__init__.py").write_text(f"raise ImportError('{mod} imported by a quick verb')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(poison), os.environ.get("PYTHONPATH", "")])}
    for backend in ("easyr1", "trl"):
        proc = run_cli_subprocess("run", "grpo-gsm8k", "--backend", backend, "--gpus", "0", "--dry-run", cwd=project, env=env)
        assert proc.returncode == (1 if "would stop on" in proc.stdout else 0), proc.stderr
        assert "imported by a quick verb" not in proc.stderr

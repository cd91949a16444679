"""Checks that keep a cluster run from failing late: EasyR1's start-up assertions with the numbers named, reward
names that cannot collide, and a full-parameter EasyR1 run that completes without EasyR1's checkout."""

from __future__ import annotations

import json

import pytest

from llf_recipes import manifest
from llf_recipes.engines.grpo_plan import plan_grpo
from llf_recipes.engines.trl.backend import trl_reward
from llf_recipes.grpo import rewards
from llf_recipes.grpo.settings import check_rewards
from llf_recipes.hardware import parse_gpus, parse_hostfile
from llf_recipes.render import Overrides, Renderer
from llf_recipes.validation import errors


@pytest.fixture
def project(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLF_EASYR1_DIR", raising=False)
    assert cli("prepare", "gsm8k_grpo", "--sample", "--data-dir", "data")[0] == 0
    return tmp_path


def easyr1_plan(catalog, layout, sets):
    recipe = catalog.recipe("grpo-gsm8k")
    stage = Renderer(recipe, layout, Overrides.parse(sets, recipe), catalog).render_all()[0]
    return plan_grpo(stage, catalog, "easyr1")


# ---------------------------------------------------------------- EasyR1's start-up assertions


def test_rollout_batch_must_split_evenly_over_the_devices(catalog, project):
    """2 nodes x 8 GPUs with 8 prompts per step: our older checks passed it, EasyR1 stops in DataProto.chunk."""
    _, findings = easyr1_plan(catalog, parse_hostfile(catalog.hostfile("2node-8gpu")),
                              ["rollout_batch_size=8", "global_batch_size=8"])
    (err,) = errors(findings)
    assert err.key == "data.rollout_batch_size"
    assert "rollout_batch_size 8 prompts do not split evenly over 16 devices" in err.message
    assert "Got size of DataProto 8 and chunk 16" in err.message and "multiple of 16" in err.fix
    _, findings = easyr1_plan(catalog, parse_hostfile(catalog.hostfile("2node-8gpu")),
                              ["rollout_batch_size=16", "global_batch_size=8"])
    assert not errors(findings)


def test_the_rest_of_easyr1s_start_up_checks_name_their_numbers(catalog, project):
    tree = ("easyr1={worker.rollout.max_num_batched_tokens: 512, trainer.load_checkpoint_path: /x/ckpt, "
            "algorithm.adv_estimator: gae, worker.critic.global_batch_size: 5, "
            "worker.critic.micro_batch_size_per_device_for_update: 3}")
    _, findings = easyr1_plan(catalog, parse_gpus("0,1"), [tree])
    by_key = {f.key: f.message for f in errors(findings) if f.rule == "easyr1-batch"}
    assert "max_prompt_length 512 + max_response_length 256 = 768" in by_key["worker.rollout.max_num_batched_tokens"]
    assert "/x/ckpt does not end with global_step_N" in by_key["trainer.load_checkpoint_path"]
    assert "rollout_batch_size 16 is not divisible by the critic's global_batch_size 5" in \
        by_key["worker.critic.global_batch_size"]
    assert "10 completions per device per critic update are not divisible by the critic's micro batch 3" in \
        by_key["worker.critic.micro_batch_size_per_device_for_update"]


# ---------------------------------------------------------------- reward names


def test_two_user_rewards_with_one_function_name_stay_apart(tmp_path):
    (tmp_path / "short.py").write_text("def score(response, answer=None, **row):\n    return 1.0\n")
    (tmp_path / "exact.py").write_text("def score(response, answer=None, **row):\n    return 10.0\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "short.py").write_text("def score(response, answer=None, **row):\n    return 100.0\n")
    specs = [f"{tmp_path}/short.py:score", f"{tmp_path}/exact.py:score", "correctness"]
    assert rewards.labels(specs) == {specs[0]: "short.score", specs[1]: "exact.score", "correctness": "correctness"}
    out = rewards.easyr1_compute_score([{"response": "x", "ground_truth": "1"}], rewards=specs)
    assert out == [{"overall": 11.0, "short.score": 1.0, "exact.score": 10.0, "correctness": 0.0}]
    # same file name in two folders: the whole spec names each
    both = [f"{tmp_path}/short.py:score", f"{tmp_path}/other/short.py:score"]
    assert rewards.labels(both) == {both[0]: both[0], both[1]: both[1]}
    assert sum(rewards.easyr1_compute_score([{"response": "x"}], rewards=both)[0].values()) == 202.0
    # TRL logs rewards/<name>/mean: distinct names there too
    tags = rewards.labels(specs)
    names = [trl_reward(s, rewards.load(s), tags[s]).__name__ for s in specs]
    assert names == ["short.score", "exact.score", "correctness"]


def test_a_reward_listed_twice_is_an_error(tmp_path):
    findings = check_rewards(["correctness", "format", "correctness"], "r/grpo", tmp_path)
    assert [f.message for f in findings] == ["lists 'correctness' more than once (each would count twice in the reward)"]


# ---------------------------------------------------------------- full-parameter finish


def test_a_full_parameter_run_completes_without_easyr1_dir(catalog, project, cli):
    plan, findings = easyr1_plan(catalog, parse_gpus("0"), ["grpo.finetuning_type=full"])
    (warning,) = [f for f in findings if f.rule == "easyr1-merge"]
    assert warning.severity == "warning" and warning.key == "easyr1_dir"
    plan.write_files()
    run_dir = plan.config_path.parent
    actor = run_dir / "checkpoints" / "global_step_3" / "actor"
    actor.mkdir(parents=True)
    (actor / "model_world_size_1_rank_0.pt").write_bytes(b"shard")  # EasyR1's FSDP shard layout, no huggingface/
    (run_dir / "checkpoints" / "checkpoint_tracker.json").write_text(json.dumps({"last_global_step": 3}))
    model = plan.finalize()  # after EasyR1 exited 0: no exception, the run is complete
    assert model["needs_merge"] == str(actor) and model["base"] is None and model["merged"] is False
    manifest.write(run_dir, {"recipe": {"name": "grpo-gsm8k"}, "stage": "grpo", "verb": "grpo", "stage_index": 0,
                             "config": plan.rendered.config, "status": "completed", "model": model})
    code, _, err = cli("export", str(run_dir), "-o", str(project / "merged"))
    assert code != 0 and "FSDP shards" in err and "easyr1_dir" in err and "--checkpoint latest" in err


# ---------------------------------------------------------------- EasyR1's environment on every node


def test_node_answers_name_each_problem_and_a_ray_mismatch():
    from llf_recipes.engines.easyr1.nodes import node_problems

    good = {"python": "/e/bin/python", "verl": "ok", "versions": {"omegaconf": "2.3.0", "transformers": "4.52.4",
                                                                   "vllm": "0.8.5", "flash-attn": "2.7.4", "ray": "2.60.0"}}
    other_ray = {**good, "versions": {**good["versions"], "ray": "2.59.1"}}
    upstream = {**good, "verl": "/e/verl is upstream verl, not EasyR1's (EasyR1 has verl/trainer/main.py, no main_ppo.py)",
                "versions": {**good["versions"], "omegaconf": "2.4.0", "vllm": None}}
    hosts = ["a", "b", "c", "d"]
    answers = {0: (good, ""), 1: (other_ray, ""), 2: (upstream, ""), 3: (None, "ssh: Connection refused")}
    problems = node_problems(hosts, answers, "/e/bin/python", gpus=True)
    assert problems == [
        "node 2 (c): /e/bin/python: /e/verl is upstream verl, not EasyR1's (EasyR1 has verl/trainer/main.py, no main_ppo.py)",
        "node 2 (c): omegaconf 2.4.0; EasyR1 fails on 2.4 at start-up (pin omegaconf<2.4)",
        "node 2 (c): vllm is not installed (EasyR1's rollouts and attention need it)",
        "node 3 (d): cannot run /e/bin/python there (ssh: Connection refused)",
        "Ray differs between nodes (a cluster needs one version): 2.59.1 on node 1; 2.60.0 on node 0, node 2",
    ]
    assert node_problems(hosts[:1], {0: (good, "")}, "/e/bin/python", gpus=True) == []


def test_every_requirement_of_the_engines_lock_is_checked_on_each_node():
    """With the engines' model of EasyR1, its lock file's requirements are checked too, with the failing version."""
    from llf_recipes.engines import get
    from llf_recipes.engines.easyr1.nodes import lock_requirements, node_problems

    engine = get("easyr1")
    required = dict(lock_requirements(engine))
    assert required["omegaconf"] == "<2.4,>=2.3" and "pyarrow" in required
    versions = {name: "99.0" for name in required} | {"omegaconf": "2.3.0", "transformers": "4.54.1", "ray": "2.60.0",
                                                      "vllm": "0.8.5", "flash-attn": "2.7.4", "pyarrow": "14.0.1"}
    versions.pop("codetiming")
    answer = {"python": "/e/bin/python", "verl": "ok", "versions": versions}
    problems = node_problems(["gpu1"], {0: (answer, "")}, "/e/bin/python", gpus=True, engine=engine)
    assert problems == [
        "node 0 (gpu1): codetiming is not installed (the easyr1 engine's lock needs it)",
        "node 0 (gpu1): pyarrow 14.0.1 does not satisfy pyarrow>=15.0.0 (the easyr1 engine's lock)",
    ]


def test_check_nodes_asks_for_and_checks_the_locks_packages_reading_the_lock_once(monkeypatch):
    from llf_recipes.engines import get
    from llf_recipes.engines.easyr1 import nodes
    from llf_recipes.errors import LlfError

    engine = get("easyr1")
    reads, asked = [], []
    real = nodes.lock_requirements

    def counted(e):
        reads.append(e.name)
        return real(e)

    def ask(hosts, python, ssh_config, dists=()):
        asked.extend(dists)
        versions = {name: None for name in dists} | {"omegaconf": "2.3.0", "transformers": "4.54.1", "ray": "2.60.0"}
        return {0: ({"python": python, "verl": "ok", "versions": versions}, "")}

    monkeypatch.setattr(nodes, "lock_requirements", counted)
    monkeypatch.setattr(nodes, "ask_nodes", ask)
    with pytest.raises(LlfError) as caught:
        nodes.check_nodes(["cpu1"], "/e/bin/python", None, False, "grpo", engine)
    assert reads == ["easyr1"]
    assert "pyarrow" in asked and "node 0 (cpu1): pyarrow>=15.0.0 is not installed" in caught.value.message

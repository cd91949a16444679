"""`llf-recipes run` for real: every stage through llamafactory-cli on the tiny model, the manifest, skip and resume,
export then ask, serve, and Ctrl-C leaving no process behind."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import assert_nothing_left, processes_with, run_cli_subprocess
from loopback import free_port, wait_for_server

pytestmark = pytest.mark.engine

@pytest.fixture(scope="module")
def project(smoke_project):
    """Every bundled sample prepared into data/, as `prepare --sample` leaves it (conftest.smoke_project, shared with
    the other modules that run the same smoke commands)."""
    return smoke_project


def env_for(tiny_model: Path) -> dict[str, str]:
    return {"LLF_RECIPES_CACHE": str(tiny_model.parent), "TOKENIZERS_PARALLELISM": "false"}


def llf(project: Path, tiny_model: Path, *argv, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_cli_subprocess(*argv, cwd=project, env=env_for(tiny_model), timeout=timeout)


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "llf-run.json").read_text())


def stage_dir(project: Path, recipe: str, stage: str) -> Path:
    return project / "saves" / "smoke" / recipe / stage


# ------------------------------------------------------------------ every stage

STAGE_RECIPES = [
    ("pt-belle", "pt", "pt"),
    ("sft-huanhuan", "sft", "sft"),
    ("sft-huanhuan-full", "sft", "sft"),
    ("dpo-ultrafeedback", "dpo", "dpo"),
    ("orpo-ultrafeedback", "orpo", "dpo"),
    ("simpo-ultrafeedback", "simpo", "dpo"),
    ("kto-ultrafeedback", "kto", "kto"),
]


@pytest.mark.parametrize(("recipe", "stage", "lf_stage"), STAGE_RECIPES, ids=[r for r, _, _ in STAGE_RECIPES])
def test_each_stage_trains_through_run(project, tiny_model, recipe, stage, lf_stage):
    proc = llf(project, tiny_model, "run", recipe, "--smoke")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = stage_dir(project, recipe, stage)
    data = manifest(out)
    assert data["status"] == "completed" and data["exit_code"] == 0
    assert data["config"]["stage"] == lf_stage
    assert data["config"]["model_name_or_path"] == str(tiny_model)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert data["metrics"]["train_loss"] > 0
    if recipe == "orpo-ultrafeedback" or recipe == "simpo-ultrafeedback":
        assert data["config"]["pref_loss"] == stage
    if data["config"].get("finetuning_type", "lora") == "lora":
        assert (out / "adapter_model.safetensors").is_file()
        assert data["model"]["adapters"] == [str(out.resolve())]
    else:
        assert (out / "model.safetensors").is_file() and data["model"]["merged"]
    # the manifest records what ran and with what
    assert data["versions"]["llamafactory"] == "0.9.5"
    for entry in data["datasets"].values():
        assert len(entry["sha256"]) == 64 and Path(entry["file"]).is_file()
    assert data["nodes"][0]["argv"] == ["llamafactory-cli", "train", data["config_path"]]


def test_rlhf_sft_rm_ppo_runs_ppo_on_its_own_engine_and_ask_answers_from_it(project, tiny_model, ppo_engine):
    """sft and rm train on LLaMA-Factory 0.9.5; ppo on the llamafactory-ppo engine (0.9.3, trl 0.9.6), reading the sft
    adapter and the rm adapter with its value head; 0.9.5's `ask` then answers from the ppo adapter."""
    proc = llf(project, tiny_model, "run", "rlhf-ultrafeedback", "--smoke", timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sft, rm, ppo_dir = (stage_dir(project, "rlhf-ultrafeedback", s) for s in ("sft", "rm", "ppo"))
    for d in (sft, rm):
        data = manifest(d)
        assert data["status"] == "completed" and data["engine"]["name"] == "llamafactory"
        assert data["versions"]["llamafactory"] == "0.9.5" and data["versions"]["trl"].startswith("0.24")
    assert (rm / "value_head.safetensors").is_file()
    ppo = manifest(ppo_dir)
    assert ppo["status"] == "completed" and ppo["exit_code"] == 0
    # the engine that ran, and the versions read from its own interpreter
    assert ppo["engine"]["name"] == "llamafactory-ppo" and ppo["engine"]["python"] == str(ppo_engine)
    assert ppo["versions"]["llamafactory"] == "0.9.3" and ppo["versions"]["trl"] == "0.9.6"
    assert ppo["versions"]["transformers"] == "4.52.4"
    assert ppo["nodes"][0]["argv"][0] == str(ppo_engine.parent / "llamafactory-cli")
    # what it read: the sft adapter to continue, the rm adapter and value head to score with
    assert ppo["config"]["adapter_name_or_path"] == "saves/smoke/rlhf-ultrafeedback/sft"
    assert ppo["config"]["reward_model"] == "saves/smoke/rlhf-ultrafeedback/rm"
    assert ppo["config"]["warmup_ratio"] == 0.1 and "warmup_steps" not in ppo["config"]  # translated for transformers 4
    log = (project / ppo["log"]).read_text()
    assert "Loaded adapter(s): saves/smoke/rlhf-ultrafeedback/sft" in log
    assert "Loaded adapter weights of reward model from saves/smoke/rlhf-ultrafeedback/rm" in log
    state = json.loads((ppo_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and all("reward" in row for row in state["log_history"])
    assert (ppo_dir / "adapter_model.safetensors").is_file()
    assert ppo["model"]["adapters"] == [str(ppo_dir.resolve())]
    answer = llf(project, tiny_model, "ask", "saves/smoke/rlhf-ultrafeedback/ppo", "What is a tokenizer?",
                 "--max-new-tokens", "8")
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert answer.stdout.endswith("\n") and "INFO" not in answer.stdout
    assert f"Loaded adapter(s): {ppo_dir.resolve()}" in (ppo_dir / "llf-ask.log").read_text()


# ------------------------------------------------------------------ the pipeline, skip, export, ask


def test_sft_then_dpo_is_wired_through_the_manifest_skipped_when_done_and_rerun_when_data_change(project, tiny_model):
    proc = llf(project, tiny_model, "run", "zhihu", "--smoke")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    sft, dpo = stage_dir(project, "zhihu", "sft"), stage_dir(project, "zhihu", "dpo")
    first_sft, first_dpo = manifest(sft), manifest(dpo)
    assert first_dpo["config"]["adapter_name_or_path"] == "saves/smoke/zhihu/sft"
    assert first_dpo["inputs"]["sft"]["config_hash"] == first_sft["config_hash"]
    assert first_dpo["model"]["adapters"] == [str(dpo.resolve())]

    again = llf(project, tiny_model, "run", "zhihu", "--smoke")
    assert again.returncode == 0
    assert again.stdout.count("skipped, completed") == 2
    assert manifest(dpo)["finished_at"] == first_dpo["finished_at"]

    # New preference data: sft is untouched, dpo runs again.
    with open(project / "data" / "zhihu_rlhf.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"instruction": "新问题？", "input": "", "chosen": "好的回答。", "rejected": "坏的。"},
                            ensure_ascii=False) + "\n")
    changed = llf(project, tiny_model, "run", "zhihu", "--smoke")
    assert changed.returncode == 0
    assert "stage sft: skipped" in changed.stdout and "stage dpo: skipped" not in changed.stdout
    assert manifest(dpo)["datasets"]["zhihu_rlhf"]["sha256"] != first_dpo["datasets"]["zhihu_rlhf"]["sha256"]

    # --force on sft reruns it; dpo, which reads it, then reruns too.
    forced = llf(project, tiny_model, "run", "zhihu", "--smoke", "--stage", "sft", "--force")
    assert forced.returncode == 0 and "--force" in forced.stdout
    after = llf(project, tiny_model, "run", "zhihu", "--smoke")
    assert "stage sft: skipped" in after.stdout and "changed since the last run: stage sft ran again" in after.stdout


def test_a_stage_whose_input_never_ran_is_refused(project, tiny_model):
    proc = llf(project, tiny_model, "run", "zhihu", "--smoke", "--stage", "dpo", "--output-root", "elsewhere")
    assert proc.returncode == 2
    assert "reads the output of stage 'sft'" in proc.stderr and "--stage sft" in proc.stderr
    assert not (project / "elsewhere" / "zhihu" / "dpo" / "llf-run.json").exists()


def test_export_then_ask_the_merged_model(project, tiny_model):
    proc = llf(project, tiny_model, "run", "zhihu", "--smoke")
    assert proc.returncode == 0
    exported = llf(project, tiny_model, "export", "saves/smoke/zhihu")
    assert exported.returncode == 0, exported.stderr[-2000:]
    merged = stage_dir(project, "zhihu", "dpo-merged")
    data = manifest(merged)
    assert data["status"] == "completed" and data["model"]["merged"] and data["model"]["adapters"] == []
    assert data["source"]["run_dir"] == str(stage_dir(project, "zhihu", "dpo").resolve())
    assert (merged / "model.safetensors").is_file() and (merged / "config.json").is_file()
    export_yaml = (merged / "llf-export.yaml").read_text()
    for key in ("quantization_bit", "learning_rate", "do_train"):
        assert key not in export_yaml
    # transformers 4 (the PPO and EasyR1 engines) reads the exported model as transformers 5 wrote it
    config = json.loads((merged / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 1000000.0
    assert json.loads((merged / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"

    asked_merged = llf(project, tiny_model, "ask", "saves/smoke/zhihu", "请用一句话介绍你自己。", "--max-new-tokens", "12",
                       "--temperature", "0")
    asked_adapter = llf(project, tiny_model, "ask", "saves/smoke/zhihu/dpo", "请用一句话介绍你自己。", "--max-new-tokens",
                        "12", "--temperature", "0")
    assert asked_merged.returncode == 0 and asked_adapter.returncode == 0, asked_merged.stderr[-2000:]
    # stdout holds the answer only; greedy decoding of the merged model matches base + adapter
    assert "INFO" not in asked_merged.stdout and asked_merged.stdout.endswith("\n")
    assert asked_merged.stdout == asked_adapter.stdout
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(merged)(asked_merged.stdout.rstrip("\n"), add_special_tokens=False)["input_ids"]
    assert len(tokens) <= 12


def test_a_failing_stage_names_its_log_and_is_recorded(failing_sft_run):
    # a LoRA target the model does not have: every check before launch passes, peft refuses it in the engine
    root, proc = failing_sft_run
    out = root / "saves" / "smoke" / "sft-huanhuan" / "sft"
    assert proc.returncode not in (0, 2, 130), proc.stderr[-2000:]
    assert f"stage sft failed with exit code {proc.returncode}; log: saves/smoke/sft-huanhuan/sft/llf-sft.log" in proc.stderr
    data = manifest(out)
    assert data["status"] == "failed" and data["exit_code"] == proc.returncode and data["metrics"] == {}


def test_an_unregistered_or_missing_dataset_stops_before_anything_starts(project, tiny_model):
    proc = llf(project, tiny_model, "run", "sft-huanhuan", "--smoke", "--output-root", "saves/unregistered",
               "--set", "dataset_dir=empty_data")
    assert proc.returncode == 2
    assert "reads dataset 'huanhuan', which is not registered in empty_data/dataset_info.json" in proc.stderr
    assert "llf-recipes prepare huanhuan --data-dir empty_data" in proc.stderr
    assert not (project / "saves" / "unregistered").exists()
    (project / "data" / "huanhuan.jsonl").rename(project / "data" / "huanhuan.jsonl.away")
    try:
        proc = llf(project, tiny_model, "run", "sft-huanhuan", "--smoke", "--output-root", "saves/unregistered")
    finally:
        (project / "data" / "huanhuan.jsonl.away").rename(project / "data" / "huanhuan.jsonl")
    assert proc.returncode == 2 and "its file data/huanhuan.jsonl is missing" in proc.stderr
    assert not (project / "saves" / "unregistered").exists()


# ------------------------------------------------------------------ Ctrl-C and resume


def test_ctrl_c_leaves_no_process_and_the_next_run_resumes_from_the_checkpoint(project, tiny_model):
    out_root = project / "saves" / "resume"
    argv = [sys.executable, "-m", "llf_recipes", "run", "sft-huanhuan", "--smoke", "--output-root", str(out_root),
            "--set", "max_steps=150", "--set", "save_steps=10"]
    env = {**os.environ, **env_for(tiny_model)}
    proc = subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    run_dir = out_root / "sft-huanhuan" / "sft"
    deadline = time.time() + 300
    while not (run_dir / "checkpoint-10" / "trainer_state.json").is_file():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    assert processes_with(str(out_root)), "the trainer should be running"
    os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 130, output[-2000:]
    assert_nothing_left(str(out_root))
    interrupted = manifest(run_dir)
    assert interrupted["status"] == "interrupted"
    # the command that ran it, kept for the verbs that suggest running it again (--smoke, --output-root, --set)
    assert interrupted["rerun"] == "llf-recipes " + shlex.join(argv[3:])
    refused = llf(project, tiny_model, "export", str(out_root / "sft-huanhuan"))
    assert f"fix: `llf-recipes {shlex.join(argv[3:])}` resumes it" in refused.stderr, refused.stderr
    done_before = max(int(p.name.split("-")[1]) for p in run_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file())
    assert done_before < 150

    resumed = run_cli_subprocess(*argv[3:], cwd=project, env=env_for(tiny_model))
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"resuming from checkpoint-{done_before}" in resumed.stdout
    data = manifest(run_dir)
    assert data["status"] == "completed" and data["start"] == "resume"
    assert data["resumed_from"].endswith(f"checkpoint-{done_before}")
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 150
    # the trainer itself says it skipped to the checkpoint's step, in the log under the second attempt's header
    log = (run_dir / "llf-sft.log").read_text()
    second = log.split("==== llf-recipes attempt 2 ")[1]
    assert re.search(rf"Resuming training from checkpoint with epoch \d+ and global step {done_before}\b", second)
    assert "==== llf-recipes attempt 1 " in log and data["attempt"] == 2
    # the mean loss is over all 150 logged steps, both attempts' (the trainer's own figure covers only the second's)
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 150 and data["metrics"]["train_loss"] == pytest.approx(sum(losses) / 150)
    trainers = json.loads((run_dir / "train_results.json").read_text())["train_loss"]
    assert trainers < sum(losses) / 150 - 1e-3
    assert f"mean loss {sum(losses) / 150:.4g}" in resumed.stdout


# ------------------------------------------------------------------ serve


def test_serve_answers_openai_requests_and_stops_cleanly(project, tiny_model):
    assert llf(project, tiny_model, "run", "sft-huanhuan", "--smoke").returncode == 0
    port = free_port()
    run_dir = stage_dir(project, "sft-huanhuan", "sft")
    argv = [sys.executable, "-m", "llf_recipes", "serve", str(run_dir), "--port", str(port), "--api-key", "sekrit",
            "--max-new-tokens", "8"]
    proc = subprocess.Popen(argv, cwd=project, env={**os.environ, **env_for(tiny_model)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        models = wait_for_server(proc, base, headers={"Authorization": "Bearer sekrit"})
        assert models["data"][0]["id"] == "sft-huanhuan/sft"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{base}/models", timeout=5)
        assert denied.value.code == 401
        body = json.dumps({"model": "sft-huanhuan/sft", "messages": [{"role": "user", "content": "你是谁？"}],
                           "max_tokens": 8}).encode()
        req = urllib.request.Request(f"{base}/chat/completions", data=body, headers={
            "Authorization": "Bearer sekrit", "Content-Type": "application/json"})
        reply = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert reply["choices"][0]["message"]["role"] == "assistant"
        assert reply["usage"]["completion_tokens"] <= 8
        refused = json.dumps({"model": "sft-huanhuan/sft", "messages": [{"role": "user", "content": "hi"}],
                              "stream": True, "n": 2}).encode()
        for headers, code in [({}, 401), ({"Authorization": "Bearer sekrit"}, 400)]:  # the key is checked first
            with pytest.raises(urllib.error.HTTPError) as answered:
                urllib.request.urlopen(urllib.request.Request(f"{base}/chat/completions", data=refused, headers={
                    **headers, "Content-Type": "application/json"}), timeout=60)
            assert answered.value.code == code
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert_nothing_left(str(run_dir / "llf-serve.yaml"))

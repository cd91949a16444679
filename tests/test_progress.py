"""What the terminal shows: which engine lines pass, the trainer-log reader behind the progress display, the closing
summary, and the records of attempts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llf_recipes import console, manifest, records, summary
from llf_recipes.progress import Snapshot, StageProgress, TrainerLog, clock


@pytest.mark.parametrize(("line", "shown"), [
    ("[WARNING|2026-11-30 09:01:06] llamafactory.hparams.parser:149 >> We recommend enable mixed precision training.", True),
    ("[INFO|2026-11-30 09:01:06] llamafactory.hparams.parser:523 >> Process rank: 0, world size: 1", False),
    ("[INFO|configuration_utils.py:765] 2026-11-30 09:01:06,415 >> Model config Qwen2Config {", False),
    ('  "hidden_size": 64,', False),
    ("input_ids:", False),
    ("[151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198]", False),
    ("{'loss': 7.0581, 'grad_norm': 1.23, 'learning_rate': 5e-06, 'epoch': 0.12}", False),
    ("/x/trl/trainer/dpo_trainer.py:559: UserWarning: The `padding_value` property is deprecated", True),
    ("Traceback (most recent call last):", True),
    ("ValueError: Cannot find valid samples, check `data/README.md` for the data format.", True),
    ("[2026-11-30 09:00:48,448] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU.", True),
    ("W1130 09:00:48.123000 1234 torch/distributed/elastic/multiprocessing/redirects.py:29] NOTE: Redirects", True),
    # asked for on purpose by a mixing config (interleave_probs): left in the log
    (("[WARNING|2026-11-30 15:30:45] llamafactory.data.data_utils:155 >> We recommend using `mix_strategy=concat` in "
     "non-streaming mode."), False),
])
def test_only_warnings_and_errors_of_the_engine_reach_the_terminal(line, shown):
    assert console.is_shown(line) is shown


def test_a_warning_is_shown_once_without_its_timestamp(capsys):
    console._SEEN.clear()
    echo = console.EngineEcho(verbose_mode=False)
    for t in ("09:01:06", "09:01:31"):  # the same warning from two stages
        echo(f"[WARNING|2026-11-30 {t}] llamafactory.hparams.parser:149 >> We recommend enable mixed precision.\n".encode())
    echo(b"[INFO|2026-11-30 09:01:06] llamafactory.data.loader:143 >> Loading dataset zhihu_sft.jsonl...\n")
    err = capsys.readouterr().err
    assert err == "engine warning: We recommend enable mixed precision.\n"


def test_verbose_streams_every_line(capsysbinary):
    echo = console.EngineEcho(verbose_mode=True)
    echo(b"[INFO|x] >> one\n")
    echo(b"\x1b[0mtwo\r\n")
    assert capsysbinary.readouterr().out == b"[INFO|x] >> one\n\x1b[0mtwo\r\n"


def test_the_tail_of_a_log_collapses_progress_redraws(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"".join(f"line {i}\n".encode() for i in range(50)) + b"10%|#\r50%|##\r100%|###\nlast\n")
    assert console.tail(log, 3) == ["line 49", "100%|###", "last"]
    assert console.tail(tmp_path / "missing.log") == []


def test_progress_reads_what_llamafactorys_log_callback_writes_and_only_this_attempts_lines(tmp_path):
    pytest.importorskip("llamafactory")
    from llamafactory.train.callbacks import LogCallback

    writer = LogCallback()
    writer._write_log(str(tmp_path), {"current_steps": 40, "total_steps": 40, "loss": 9.0, "lr": 1e-4,
                                      "elapsed_time": "0:01:00", "remaining_time": "0:00:00"})  # an earlier attempt
    log = TrainerLog(tmp_path)
    assert log.poll() == []
    writer._reset(max_steps=30)
    for step in (10, 20):
        writer.cur_steps = step
        writer._write_log(str(tmp_path), {"current_steps": step, "total_steps": 30, "loss": 2.5 - step / 100,
                                          "lr": 2e-5, "elapsed_time": "0:00:10", "remaining_time": "1 day, 0:00:05"})
    snap = Snapshot()
    for entry in log.poll():
        snap.update(entry)
    assert (snap.step, snap.total, snap.loss, snap.lr) == (20, 30, 2.3, 2e-5)
    assert snap.remaining_s == 86405
    assert log.poll() == []  # nothing new


def test_progress_reads_easyr1s_experiment_log(tmp_path):
    path = tmp_path / "checkpoints" / "experiment_log.jsonl"  # EasyR1's trainer.save_checkpoint_path, as planned
    path.parent.mkdir()
    log = TrainerLog(tmp_path)
    path.write_text(json.dumps({"step": 3, "actor": {"pg_loss": 0.25, "lr": 1e-6}, "reward": {"overall": 0.5}}) + "\n"
                    + '{"step": 4, "act')  # a line still being written is left for the next poll
    snap = Snapshot(total=10)
    for entry in log.poll():
        snap.update(entry)
    assert (snap.step, snap.total, snap.loss, snap.lr, snap.extra["reward"]) == (3, 10, 0.25, 1e-6, 0.5)


def test_a_plain_progress_line_ends_the_stage_when_not_on_a_terminal(tmp_path, capsys):
    with StageProgress(tmp_path, "[1/2] sft", total_hint=3, interval=0.05) as shown:
        (tmp_path / "trainer_log.jsonl").write_text(json.dumps(
            {"current_steps": 3, "total_steps": 3, "loss": 1.5, "lr": 1e-5, "remaining_time": "0:00:00"}) + "\n")
        shown.echo("engine warning: something")
        time.sleep(0.2)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "engine warning: something"
    assert err[1].startswith("[1/2] sft: step 3/3, loss 1.5, lr 1.00e-05, elapsed 0:0")


def test_clock():
    assert (clock(5), clock(65), clock(3725), clock(None)) == ("0:05", "1:05", "1:02:05", "-:--")


def _stage(tmp_path: Path, name: str, index: int, **fields) -> Path:
    run_dir = tmp_path / "saves" / "zhihu" / name
    run_dir.mkdir(parents=True)
    manifest.write(run_dir, {"stage": name, "stage_index": index, "log": str(run_dir / f"llf-{name}.log"), **fields})
    return run_dir


def test_the_summary_names_the_model_and_the_next_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    since = time.time() - 30
    sft = _stage(tmp_path, "sft", 0, status="completed", finished_at="2020-01-01T00:00:00+0000", duration_s=61,
                 metrics={"train_loss": 2.0})
    dpo = _stage(tmp_path, "dpo", 1, status="completed", finished_at=manifest.now(), duration_s=3725.2,
                 metrics={"train_loss": 0.69312, "eval_loss": 0.7},
                 model={"base": "Qwen/Qwen2.5-0.5B-Instruct", "adapters": [str(sft), str(dpo_dir(tmp_path))]})
    lines = summary.render("zhihu", summary.stage_rows([("sft", sft), ("dpo", dpo)], since), 3725, "llf-recipes run zhihu")
    text = "\n".join(lines)
    assert "zhihu: 2 of 2 stage(s) completed in 1:02:05 (run)" in text
    assert "  sft  done before     1:01  mean loss 2\n" in text  # skipped now, completed by an earlier run
    assert "  dpo  completed    1:02:05  mean loss 0.6931, eval loss 0.7\n" in text
    assert "model: saves/zhihu/dpo (LoRA adapter on Qwen/Qwen2.5-0.5B-Instruct)" in text
    assert "  llf-recipes export saves/zhihu/dpo   # merge into a standalone model" in lines
    assert "  llf-recipes eval saves/zhihu" in lines and "  llf-recipes report saves/zhihu" in lines
    assert max(len(line) for line in lines) <= 80


def dpo_dir(tmp_path: Path) -> Path:
    return tmp_path / "saves" / "zhihu" / "dpo"


def test_the_summary_of_a_failed_run_names_the_log_and_the_rerun(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    since = time.time() - 30
    sft = _stage(tmp_path, "sft", 0, status="failed", finished_at=manifest.now(), duration_s=5, exit_code=1)
    dpo = _stage(tmp_path, "dpo", 1, status="completed", finished_at="2020-01-01T00:00:00+0000", duration_s=9)
    lines = summary.render("zhihu", summary.stage_rows([("sft", sft), ("dpo", dpo)], since), 5,
                           "llf-recipes run zhihu --smoke")
    assert lines[1] == "zhihu: 0 of 2 stage(s) completed in 0:05; stage sft failed"
    assert any(line.startswith("  dpo") and "not reached" in line for line in lines)
    assert "log: saves/zhihu/sft/llf-sft.log" in lines
    assert lines[-1] == "next: fix what the log says, then `llf-recipes run zhihu --smoke` (completed stages are skipped)"
    assert not any("export" in line for line in lines)


def test_attempt_headers_and_a_refused_attempt_leaves_the_previous_manifest(tmp_path):
    log = tmp_path / "llf-sft.log"
    log.write_text("old output\nTraining completed.\n")
    records.write_header(log, 2, "llamafactory-cli train x.yaml", {"config_hash": "ab" * 32, "datasets": {}}, "resume")
    text = log.read_text()
    assert text.startswith("old output\nTraining completed.\n\n==== llf-recipes attempt 2 · ")
    assert "command: llamafactory-cli train x.yaml\nfingerprint: config abababababab\n" in text
    assert records.attempts_in(log) == 1
    previous = {"schema": manifest.SCHEMA, "status": "completed", "attempt": 1}
    manifest.write(tmp_path, {**previous, "status": "running"})
    records.refused(tmp_path, previous, log, "stage sft: preflight found 1 problem(s); nothing was started")
    assert manifest.read(tmp_path)["status"] == "completed"
    assert log.read_text().endswith("not started: stage sft: preflight found 1 problem(s); nothing was started\n")
    records.refused(tmp_path, None, log, "x")
    assert manifest.read(tmp_path) is None


def test_quick_verbs_still_do_not_import_rich_progress():
    code = ("import sys; from llf_recipes.cli import main; main(['list']); "
            "sys.exit(int('rich.progress' in sys.modules or 'torch' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, check=False).returncode == 0


def test_the_summary_of_an_interrupted_run_says_the_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sft = _stage(tmp_path, "sft", 0, status="interrupted", finished_at=manifest.now(), duration_s=5, exit_code=130)
    lines = summary.render("zhihu", summary.stage_rows([("sft", sft)], time.time() - 30), 5, "llf-recipes run zhihu")
    assert lines[-1] == "next: `llf-recipes run zhihu` resumes it (from its latest checkpoint, if it saved one)"


def test_a_verbs_bar_is_drawn_only_on_a_terminal_and_its_steps_are_logged_either_way(tmp_path):
    """generate, score and judge off a terminal: no redrawn bar in the captured stderr; a stage's steps log still
    gets the counts the run's display reads."""
    import os

    steps = tmp_path / "steps.jsonl"
    script = ("from llf_recipes.stepslog import progress_bar\n"
              "bar = progress_bar(4, 'generate out.jsonl', True, 'prompt')\n"
              "for _ in range(4):\n    bar.update(1)\nbar.close()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          env={**os.environ, "LLF_STEPS_LOG": str(steps)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    last = json.loads(steps.read_text().splitlines()[-1])
    assert (last["current_steps"], last["total_steps"]) == (4, 4)


def test_the_mean_loss_covers_every_step_of_a_resumed_run_not_the_trainers_last_attempt(tmp_path):
    # A run resumed at step 4: the trainer's train_loss sums steps 5-8 only but divides by 8; the log holds all 8.
    log = [{"step": 2, "loss": 8.0}, {"step": 4, "loss": 6.0}, {"step": 5, "loss": 3.0}, {"step": 8, "loss": 1.0},
           {"step": 8, "train_loss": (3.0 + 3 * 1.0) / 8, "train_runtime": 1.0}]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 8, "log_history": log}))
    (tmp_path / "all_results.json").write_text(json.dumps({"train_loss": 0.75, "epoch": 2.0}))
    metrics = manifest.final_metrics(tmp_path)
    assert metrics["train_loss"] == (2 * 8.0 + 2 * 6.0 + 3.0 + 3 * 1.0) / 8 and metrics["epoch"] == 2.0
    (tmp_path / "trainer_state.json").unlink()  # no log to read: what the trainer said
    assert manifest.final_metrics(tmp_path)["train_loss"] == 0.75

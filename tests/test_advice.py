"""Advice that fits the situation: runs found under another output root, a failed run named as failed, a recipe
name given to `prepare`, a dataset checked for the wrong stage, a busy port for `serve`, and a never-started
stage leaving no record."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from llf_recipes import manifest


def stage(root: Path, recipe: str, name: str, status: str = "completed", **fields) -> Path:
    run_dir = root / recipe / name
    run_dir.mkdir(parents=True)
    manifest.write(run_dir, {"recipe": {"name": recipe}, "stage": name, "stage_index": 0, "status": status,
                             "log": str(run_dir / f"llf-{name}.log"), "finished_at": manifest.now(),
                             "model": {"base": "Qwen/Qwen2.5-0.5B-Instruct", "adapters": []}, **fields})
    return run_dir


@pytest.mark.parametrize("verb", [["export"], ["ask", "hi"], ["chat"], ["serve"]])
def test_a_recipe_run_under_another_output_root_is_pointed_at(cli, tmp_path, monkeypatch, verb):
    monkeypatch.chdir(tmp_path)
    stage(tmp_path / "saves" / "smoke", "zhihu", "sft")
    code, _, err = cli(verb[0], "zhihu", *verb[1:])
    assert code == 2
    assert "error: no completed run found for 'zhihu'" in err
    assert "fix: it was run under another output root: add --output-root saves/smoke" in err


def test_a_failed_run_is_named_as_failed_with_its_log(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = stage(tmp_path / "saves", "sft-huanhuan", "sft", status="failed", exit_code=1)
    for target in ("sft-huanhuan", "saves/sft-huanhuan/sft"):
        code, _, err = cli("ask", target, "hi")
        assert code == 2
        assert "error: saves/sft-huanhuan/sft/llf-sft.log: the run in saves/sft-huanhuan/sft failed (exit code 1): it " \
               "has no model to use" in err
        assert ("fix: see its log, fix what it says, then `llf-recipes run sft-huanhuan` (completed stages are "
                "skipped)") in err
        assert "pass a stage's output directory" not in err
    assert run_dir.is_dir()


def test_an_interrupted_run_is_resumed_by_the_command_that_ran_it(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a smoke run under another root, with --set values, interrupted; the log named relative to where it ran
    stage(tmp_path / "runs", "zhihu", "sft", status="interrupted", exit_code=130, cwd=str(tmp_path),
          log="runs/zhihu/sft/llf-sft.log", rerun="llf-recipes run zhihu --smoke --output-root runs --set max_steps=40", layout={"source": "smoke"})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for verb in (["ask", "../runs/zhihu", "hi"], ["export", "../runs/zhihu"],
                 ["ask", "zhihu", "hi", "--output-root", "../runs"]):
        code, _, err = cli(*verb)
        assert code == 2
        assert f"error: {tmp_path.resolve()}/runs/zhihu/sft/llf-sft.log: the run in" in err  # found from here
        assert ("fix: `llf-recipes run zhihu --smoke --output-root runs --set max_steps=40` resumes it (from its latest "
                "checkpoint, if it saved one; completed stages are skipped)") in err, err
    # a manifest without the command: rebuilt with --smoke and the output root, never a real run's command
    monkeypatch.chdir(tmp_path)
    data = manifest.read(tmp_path / "runs/zhihu/sft")
    del data["rerun"]
    manifest.write(tmp_path / "runs/zhihu/sft", data)
    code, _, err = cli("export", "runs/zhihu")
    assert "fix: `llf-recipes run zhihu --smoke --output-root runs` resumes it" in err, err


def test_prepare_given_a_recipe_name_suggests_prepare_recipe(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("prepare", "zhihu", "--sample")
    assert code == 2
    assert "error: 'zhihu' is a recipe, not a dataset\n  fix: llf-recipes prepare --recipe zhihu --sample-data prepares" in err
    assert not (tmp_path / "data").exists()


def test_checking_sft_rows_for_dpo_says_which_stage_they_fit(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("prepare", "huanhuan", "--sample")[0] == 0
    code, _, err = cli("check", "huanhuan", "--stage", "dpo")
    assert code == 2 and "has ranking: false" in err
    assert "fix: rm and dpo read ranking entries (chosen/rejected); pt, sft, kto and ppo read the others" in err


def test_serve_on_a_busy_port_stops_before_loading_anything(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = stage(tmp_path / "saves", "sft-huanhuan", "sft")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = cli("serve", str(run_dir), "--port", str(port))
    assert code == 2
    assert f"error: port {port} on 127.0.0.1 is already in use\n  fix: pick another port (--port {port + 1})" in err
    assert out == "" and not (run_dir / "llf-serve.yaml").exists() and not (run_dir / "llf-serve.log").exists()


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_serve_refuses_a_port_outside_1_to_65535_as_a_usage_error(capsys, tmp_path, monkeypatch, port):
    from llf_recipes.cli import main

    monkeypatch.chdir(tmp_path)
    run_dir = stage(tmp_path / "saves", "sft-huanhuan", "sft")
    with pytest.raises(SystemExit) as exc:
        main(["serve", str(run_dir), f"--port={port}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"llf-recipes serve: error: argument --port: {port} is not a TCP port (1-65535)"
    assert "Traceback" not in err and not (run_dir / "llf-serve.yaml").exists()


def test_serve_on_an_address_not_of_this_machine_says_so_not_port_in_use(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = stage(tmp_path / "saves", "sft-huanhuan", "sft")
    code, out, err = cli("serve", str(run_dir), "--host", "192.0.2.1", "--port", "8123")  # TEST-NET-1, never local
    assert code == 2
    assert "error: 192.0.2.1 is not an address of this machine, so nothing can listen on it" in err
    assert "already in use" not in err and out == "" and not (run_dir / "llf-serve.log").exists()
    code, _, err = cli("serve", str(run_dir), "--host", "no-such-host.invalid")
    assert code == 2 and "error: cannot resolve host 'no-such-host.invalid'" in err


def test_a_stage_refused_by_its_launcher_leaves_no_interrupted_record(cli, tmp_path, monkeypatch):
    """The ssh launcher's own checks refuse a host that does not resolve: nothing started, so nothing is recorded
    as interrupted (and the report, which lists manifests, has nothing to list)."""
    monkeypatch.chdir(tmp_path)
    assert cli("prepare", "huanhuan", "--sample")[0] == 0
    hostfile = tmp_path / "hosts"
    hostfile.write_text("nosuchhost.invalid slots=1\n")
    code, _, err = cli("run", "sft-huanhuan", "--hostfile", str(hostfile), "--launcher", "ssh",
                         "--set", "deepspeed=none")
    assert code == 2, err
    assert "nothing was started" in err
    run_dir = tmp_path / "saves" / "sft-huanhuan" / "sft"
    assert not manifest.path_for(run_dir).exists()
    log = (run_dir / "llf-sft.log").read_text()
    assert log.startswith("==== llf-recipes attempt 1 · ") and "\nnot started: " in log
    assert list(manifest.find([tmp_path / "saves"])) == []


def test_a_recipe_whose_stage_sets_its_own_output_dir_is_found_by_name(cli, tmp_path, monkeypatch):
    """A recipe wrapping an example with output_dir: saves/qwen3-4b/lora/sft: its name still finds that run; a smoke
    run there is pointed at, not used; a path that does not exist says so."""
    monkeypatch.chdir(tmp_path)
    stage(tmp_path / "saves", "lf-qwen3-sft", "sft").rename(tmp_path / "saves" / "sft")  # its own output_dir
    (tmp_path / "saves" / "lf-qwen3-sft").rmdir()
    stage(tmp_path / "saves", "other", "sft")
    run_dir, data = manifest.resolve("lf-qwen3-sft", "saves")
    assert (run_dir, data["recipe"]["name"]) == (Path("saves/sft"), "lf-qwen3-sft")

    stage(tmp_path / "elsewhere", "lf-smoke", "sft", layout={"source": "smoke"}).rename(tmp_path / "elsewhere" / "out")
    (tmp_path / "elsewhere" / "lf-smoke").rmdir()
    code, _, err = cli("ask", "lf-smoke", "hi", "--output-root", "elsewhere")
    assert code == 2 and "error: no completed run found for 'lf-smoke'" in err
    assert "fix: only a smoke run of it was found, in elsewhere/out: pass that directory" in err

    for missing in ("saves/nosuch", "./nosuch"):
        code, out, err = cli("ask", missing, "hi")
        assert (code, out) == (2, "")
        assert f"error: {missing} does not exist\n" in err and "no completed run" not in err


def test_an_export_stopped_by_ctrl_c_says_interrupted_and_exits_130(cli, tmp_path, monkeypatch):
    """The engine's exit code 130 (Ctrl-C reached its process group) is an interruption, as for eval and serve."""
    from llf_recipes.launchers import local

    monkeypatch.chdir(tmp_path)
    run_dir = stage(tmp_path / "saves", "sft-huanhuan", "sft",
                    model={"base": "Qwen/Qwen2.5-0.5B-Instruct", "adapters": ["saves/sft-huanhuan/sft"]})
    monkeypatch.setattr(local, "stream", lambda argv, env, log: 130)
    code, _, err = cli("export", str(run_dir))
    assert (code, err.strip().splitlines()[-1]) == (130, "interrupted")
    assert "failed" not in err
    assert manifest.read(tmp_path / "saves" / "sft-huanhuan" / "sft-merged")["status"] == "interrupted"


@pytest.mark.parametrize("target", ["/proc/llf-x", "/sys/llf-x/y"])
def test_an_unwritable_export_dir_or_output_root_is_named_not_writable_before_anything_starts(cli, tmp_path,
                                                                                           monkeypatch, target):
    """Permission bits do not tell for root or pseudo file systems: the check tries, and names the path."""
    monkeypatch.chdir(tmp_path)
    run_dir = stage(tmp_path / "saves", "sft-huanhuan", "sft",
                    model={"base": "Qwen/Qwen2.5-0.5B-Instruct", "adapters": ["saves/sft-huanhuan/sft"]})
    code, out, err = cli("export", str(run_dir), "-o", target)
    assert code == 2 and err.startswith(f"error: {target} is not writable (")
    assert "does not exist" not in err and not (run_dir.parent / "sft-merged").exists() and out == ""
    assert cli("prepare", "huanhuan", "--sample")[0] == 0
    code, out, err = cli("run", "sft-huanhuan", "--smoke", "--output-root", target)
    assert code == 2 and f"error: output root {target} is not writable (" in err
    assert "GiB free" not in err and not Path(target).exists()
    code, out, _ = cli("run", "sft-huanhuan", "--smoke", "--output-root", target, "--dry-run")
    assert f"output root {target} is not writable (" in out


def test_the_data_that_prepare_writes_into_a_checkout_is_ignored_by_git_like_saves():
    """The README's first command writes data/ and saves/ in the checkout: neither shows as untracked; the package's
    own llf_recipes/data/ stays tracked."""
    import shutil
    import subprocess

    from conftest import ROOT

    if not shutil.which("git") or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    probe = ["data/dataset_info.json", "saves/smoke/x", "llf_recipes/data/__init__.py"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *probe], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.stdout.split() == probe[:2]

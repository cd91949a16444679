"""Paths that cannot work, and the lesser holes: each is one line naming the path and the fix, a non-zero exit, and
nothing written."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli_subprocess

from llf_recipes.errors import LlfError

ROWS = "".join(json.dumps({"instruction": f"q{i}", "input": "", "output": f"a{i}"}) + "\n" for i in range(4))


@pytest.fixture
def place(tmp_path):
    (tmp_path / "good.jsonl").write_text(ROWS)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    os.symlink(tmp_path / "loop2.jsonl", tmp_path / "loop1.jsonl")
    os.symlink(tmp_path / "loop1.jsonl", tmp_path / "loop2.jsonl")
    nested = tmp_path / "nested"
    nested.mkdir()
    (nested / "dataset_info.json").write_text("[" * 100000 + "]" * 100000)
    (tmp_path / "info_is_dir" / "dataset_info.json").mkdir(parents=True)
    (tmp_path / "lock_is_dir" / "dataset_info.json.lock").mkdir(parents=True)
    return tmp_path


CASES = [
    (["clean", "loop1.jsonl", "-o", "out.jsonl"], ".jsonl: is a loop of symbolic links"),
    (["convert", "loop1.jsonl", "--kind", "alpaca", "-o", "out.jsonl"], "loop1.jsonl"),
    (["register", "--file", "loop1.jsonl", "--name", "x", "--stage", "sft", "--data-dir", "d"],
     ".jsonl: is a loop of symbolic links"),
    (["clean", "good.jsonl", "-o", "a_dir"], "a_dir is a directory"),
    (["clean", "good.jsonl", "-o", "a_file/out.jsonl"], "a_file is a file, so a_file/out.jsonl cannot be written"),
    (["clean", "good.jsonl", "-o", "o.jsonl", "--val-ratio", "0.5", "--val-out", "a_dir"], "a_dir is a directory"),
    (["convert", "good.jsonl", "--kind", "alpaca", "-o", "a_dir"], "a_dir is a directory"),
    (["convert", "good.jsonl", "--kind", "alpaca", "-o", "a_file/x.jsonl"], "a_file is a file"),
    (["convert", "good.jsonl", "--kind", "alpaca", "-o", "good.jsonl"], "the output good.jsonl is the input file"),
    (["register", "huanhuan", "--data-dir", "a_file"], "a_file is a file, not a directory"),
    (["prepare", "huanhuan", "--sample", "--data-dir", "a_file"], "a_file is a file, not a directory"),
    (["check", "huanhuan", "--stage", "sft", "--data-dir", "a_file"], "a_file is a file, not a directory"),
    (["register", "huanhuan", "--data-dir", "nested"], "nested/dataset_info.json: is nested too deeply"),
    (["check", "huanhuan", "--stage", "sft", "--data-dir", "nested"], "nested/dataset_info.json: is nested too deeply"),
    (["register", "huanhuan", "--data-dir", "info_is_dir"], "info_is_dir/dataset_info.json: is a directory"),
    (["register", "huanhuan", "--data-dir", "lock_is_dir"], "lock_is_dir/dataset_info.json.lock: is a directory"),
    (["convert", "nosuch.json", "--kind", "alpaca"], "nosuch.json does not exist"),
    (["check", "nosuch.json", "--stage", "sft"], "nosuch.json does not exist"),
    (["check", "huanhuan", "--stage", "sft", "--data-dir", "nodir"], "the data folder nodir does not exist"),
    (["check", "nosuch", "--stage", "sft", "--data-dir", "a_dir"],
     "no dataset entry named 'nosuch' in dataset_info.d/ (a_dir/dataset_info.json does not exist)"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(c[0][:2]) + f"-{i}" for i, c in enumerate(CASES)])
def test_a_path_that_cannot_work_is_one_line(place, argv, message):
    def listing():  # the lock file a writer of dataset_info.json takes is not output
        return sorted(p.name for p in place.rglob("*") if not (p.name.endswith(".lock") and p.is_file()))

    before = listing()
    good = (place / "good.jsonl").read_bytes()
    proc = run_cli_subprocess(*argv, cwd=place)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr.splitlines()[0], proc.stderr
    assert listing() == before  # nothing written, nothing left
    assert (place / "good.jsonl").read_bytes() == good


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_input_is_one_line(place):
    (place / "good.jsonl").chmod(0)
    proc = run_cli_subprocess("clean", "good.jsonl", "-o", "out.jsonl", cwd=place)
    assert proc.returncode == 2 and "good.jsonl: permission denied" in proc.stderr


def test_convert_removes_the_rejects_of_an_earlier_run(place):
    (place / "mixed.jsonl").write_text(ROWS + '{"instruction": 3, "output": "x"}\n')
    first = run_cli_subprocess("convert", "mixed.jsonl", "--kind", "alpaca", "-o", "out.jsonl", "--skip-bad", cwd=place)
    assert first.returncode == 0 and (place / "out.jsonl.rejects.jsonl").is_file()
    again = run_cli_subprocess("convert", "good.jsonl", "--kind", "alpaca", "-o", "out.jsonl", cwd=place)
    assert again.returncode == 0 and not (place / "out.jsonl.rejects.jsonl").exists()


def test_clean_removes_the_rejects_of_an_earlier_run(place):
    (place / "mixed.jsonl").write_text(ROWS + "not json\n")
    assert run_cli_subprocess("clean", "mixed.jsonl", "-o", "out.jsonl", "--skip-bad", cwd=place).returncode == 0
    assert (place / "out.jsonl.rejects.jsonl").is_file() or (place / "out.rejects.jsonl").is_file()
    again = run_cli_subprocess("clean", "good.jsonl", "-o", "out.jsonl", cwd=place)
    assert again.returncode == 0, again.stderr
    assert not (place / "out.rejects.jsonl").exists() and "left by an earlier --skip-bad run" in again.stderr


def test_check_of_a_whitespace_only_file_fails(place):
    (place / "blank.jsonl").write_text("  \n\t\n\n")
    proc = run_cli_subprocess("check", "blank.jsonl", "--stage", "sft", cwd=place)
    assert proc.returncode == 2 and "blank.jsonl: holds no rows" in proc.stderr


def test_csv_with_invalid_utf8_names_the_line(place):
    (place / "bad.csv").write_bytes(b"instruction,output\nq1,a1\nq2,a2\n\xff\xfeq3,a3\n")
    proc = run_cli_subprocess("check", "bad.csv", "--stage", "sft", cwd=place)
    assert proc.returncode == 2 and "bad.csv:4: invalid UTF-8" in proc.stderr


def test_host_names_starting_with_a_dash_are_refused():
    from llf_recipes.hardware import parse_hostfile_text

    with pytest.raises(LlfError, match="'-oProxyCommand=touch' is not a host name"):
        parse_hostfile_text("-oProxyCommand=touch slots=8\n", "hf")


def test_the_ssh_fix_ends_options_before_the_host():
    from llf_recipes.launchers.ssh import _ssh_fix

    assert "ssh -o BatchMode=yes -- node1 true" in _ssh_fix("node1", None)


def test_url_credentials_are_not_forwarded_to_other_nodes():
    from llf_recipes.launchers.ssh import forwarded_env

    env = forwarded_env({"HF_ENDPOINT": "https://user:pass@mirror.example/hf", "HF_HOME": "/data/hf",
                         "NCCL_DEBUG": "WARN", "HF_MIRROR": "https://tok@mirror.example"})
    assert env == {"HF_HOME": "/data/hf", "NCCL_DEBUG": "WARN"}


def test_serve_reads_its_api_key_from_a_file(tmp_path):
    import argparse

    from llf_recipes.cli.serve import api_key

    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    assert api_key(argparse.Namespace(api_key=None, api_key_file=str(key_file))) == "s3cret"
    assert api_key(argparse.Namespace(api_key=None, api_key_file=None)) is None  # the server reads $API_KEY itself
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(LlfError, match="holds no API key"):
        api_key(argparse.Namespace(api_key=None, api_key_file=str(tmp_path / "empty")))
    proc = run_cli_subprocess("serve", str(tmp_path), "--api-key-file", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_the_run_banner_is_shell_quoted_and_the_config_holds_the_output_root(tmp_path):
    assert run_cli_subprocess("prepare", "huanhuan", "--sample", cwd=tmp_path).returncode == 0
    root = tmp_path / "runs #1"
    proc = run_cli_subprocess("run", "sft-huanhuan", "--verbose", "--launcher", "print", "--output-root", str(root),
                              cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    yaml_path = root / "sft-huanhuan" / "sft" / "llf-sft.yaml"
    banner = next(line for line in proc.stdout.splitlines() if line.startswith("[1/1] stage sft: "))
    assert banner.startswith(f"[1/1] stage sft: llamafactory-cli train '{yaml_path}'")
    from omegaconf import OmegaConf  # what LLaMA-Factory reads the YAML with

    assert OmegaConf.load(yaml_path).output_dir == str(root / "sft-huanhuan" / "sft")


FIELD_ERRORS = [
    ("alpaca", {"input": "x", "output": "y"}, "instruction"),
    ("alpaca", {"instruction": "x", "output": 3}, "output"),
    ("alpaca", {"instruction": "", "output": "y"}, "instruction"),
    ("alpaca", {"instruction": "x", "input": 5, "output": "y"}, "input"),
    ("pairs", {"prompt": "x", "chosen": "a"}, "rejected"),
    ("pairs", {"prompt": "x"}, "chosen"),
    ("pairs", {"prompt": 3, "chosen": "a", "rejected": "b"}, "prompt"),
    ("pairs", {"chosen": "a", "rejected": "b"}, "prompt"),
    ("pairs", {"prompt": "x", "chosen": ["bad"], "rejected": "b"}, "chosen"),
    ("pairs", {"prompt": "x", "chosen": "", "rejected": "b"}, "chosen"),
    ("messages_to_alpaca", {"messages": "x"}, "messages"),
    ("messages_to_alpaca", {"messages": [{"role": "assistant", "content": "a"}]}, "messages"),
    ("messages_to_alpaca", {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]},
     "messages"),
    ("gsm8k_grpo", {"question": "x"}, "answer"),
    ("gsm8k_grpo", {"question": 3, "answer": "#### 4"}, "question"),
    ("sharegpt_to_alpaca", {"conversations": [{"from": "alien", "value": "x"}]}, "conversations"),
]


@pytest.mark.parametrize(("kind", "row", "field"), FIELD_ERRORS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(FIELD_ERRORS)])
def test_every_convert_field_error_names_the_field_and_line(place, kind, row, field):
    (place / "rows.jsonl").write_text(ROWS if kind == "alpaca" else "")
    with open(place / "rows.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    line = len((place / "rows.jsonl").read_text().splitlines())
    proc = run_cli_subprocess("convert", "rows.jsonl", "--kind", kind, "-o", "out.jsonl", cwd=place)
    assert proc.returncode == 2 and not (place / "out.jsonl").exists()
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"error: rows.jsonl:{line}: ") and f"'{field}'" in first, first


def test_file_system_failures_read_as_one_line_with_the_path():
    import errno

    from llf_recipes.errors import from_os_error

    err = from_os_error(PermissionError(errno.EACCES, "Permission denied", "/data/x.jsonl"))
    assert str(err).splitlines()[0] == "/data/x.jsonl: permission denied"
    err = from_os_error(IsADirectoryError(errno.EISDIR, "Is a directory", "/d/.tmp123", None, "/d/out"))
    assert str(err).startswith("/d/out: is a directory")
    assert from_os_error(RuntimeError("Symlink loop from '/a/b'")).where == "/a/b"
    assert from_os_error(ValueError("x")) is None

"""`llf-recipes download` against local stand-ins of both hubs (tests/hubserver.py): no test reaches the internet.

The hub libraries read their environment (HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE, MODELSCOPE_ENDPOINT, ...) once, at
import, so every download runs the real CLI in a fresh process with that environment, as a user's shell would.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hubserver import HubServer, Repo

from llf_recipes import cli
from llf_recipes.data.download import find_source, pick_hub
from llf_recipes.errors import LlfError

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "llf_recipes" / "samples"
# The real dispatcher, with the verb registered even before cli.VERBS lists it.
RUNNER = ("import sys; from llf_recipes import cli; cli.VERBS.setdefault('download', 'download'); "
          "sys.exit(cli.main(sys.argv[1:]))")

ZHIHU = "liyucheng/zhihu_rlhf_3k"
HUANHUAN = "CFYuan/Chat-huanhuan"
PARQUET = "data/train-00000-of-00001.parquet"


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def write_repo(root: Path, repo: str, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        target = root / repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def zhihu_files(parquet_size: int = 300_000) -> dict[str, bytes]:
    return {
        PARQUET: blob(parquet_size),
        "zhihu.jsonl": (SAMPLES / "zhihu_rlhf.jsonl").read_bytes(),
        "README.md": b"# zhihu_rlhf_3k\n",
        "dataset_infos.json": b"{}",  # hub metadata: must not be taken for data
    }


@pytest.fixture
def hub_root(tmp_path) -> Path:
    root = tmp_path / "hub"
    write_repo(root, ZHIHU, zhihu_files())
    write_repo(root, HUANHUAN, {"huanhuan.json": (SAMPLES / "huanhuan.jsonl").read_bytes(), "README.md": b"# hh\n"})
    write_repo(root, "someone/docs_only", {"README.md": b"# docs\n", "data.zip": blob(1000)})
    return root


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """A clean environment: the hubs' caches and the home directory live in tmp_path."""
    hub_vars = ("HF_", "HUGGINGFACE_", "MODELSCOPE_", "USE_MODELSCOPE_HUB", "TRANSFORMERS_OFFLINE")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(hub_vars)}
    return clean | {
        "HOME": str(tmp_path / "home"),
        "HF_HOME": str(tmp_path / "hf"),
        "MODELSCOPE_CACHE": str(tmp_path / "ms"),
        # one listing attempt instead of four with back-off, so the unreachable-endpoint tests stay quick
        "MODELSCOPE_REPO_TREE_PAGE_MAX_ATTEMPTS": "1",
    }


def served(server: HubServer, env: dict[str, str]) -> dict[str, str]:
    return env | {"HF_ENDPOINT": server.url, "MODELSCOPE_ENDPOINT": server.url}


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def download_argv(*argv: str) -> list[str]:
    return [sys.executable, "-c", RUNNER, "download", *argv]


def llf(*argv: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(download_argv(*argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def listed(stdout: str) -> tuple[Path, list[Path]]:
    """(snapshot, data files) as the verb prints them."""
    lines = [line.split(None, 1) for line in stdout.splitlines() if line.startswith(("snapshot ", "data "))]
    return Path(next(v for k, v in lines if k == "snapshot")), [Path(v) for k, v in lines if k == "data"]


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the download to get going")
        time.sleep(0.02)


# ------------------------------------------------------------------ naming and hub choice (in process)
def test_entry_and_fragment_names_resolve_to_their_source(catalog):
    assert find_source(catalog, "zhihu_rlhf") == find_source(catalog, "zhihu_sft")  # two entries, one fragment
    assert find_source(catalog, "ultrafeedback")["huggingface"] == "HuggingFaceH4/ultrafeedback_binarized"
    assert find_source(catalog, "ultrafeedback_prefs") == find_source(catalog, "ultrafeedback")


def test_unknown_name_suggests_the_nearest(catalog):
    with pytest.raises(LlfError) as exc:
        find_source(catalog, "zhihu_rlfh")
    assert "did you mean 'zhihu_rlhf'" in str(exc.value)


def test_hub_choice(catalog, monkeypatch):
    monkeypatch.delenv("USE_MODELSCOPE_HUB", raising=False)
    belle = find_source(catalog, "belle_0.5m")
    assert pick_hub("belle_0.5m", belle) == ("huggingface", "BelleGroup/train_0.5M_CN")
    assert pick_hub("belle_0.5m", belle, "modelscope") == ("modelscope", "BelleGroup/train_0.5M_CN")
    assert pick_hub("huanhuan", find_source(catalog, "huanhuan")) == ("modelscope", HUANHUAN)
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")  # LLaMA-Factory's switch
    assert pick_hub("belle_0.5m", belle)[0] == "modelscope"
    assert pick_hub("zhihu_rlhf", find_source(catalog, "zhihu_rlhf")) == ("huggingface", ZHIHU)
    with pytest.raises(LlfError, match="not on modelscope; it is on huggingface"):
        pick_hub("zhihu_rlhf", find_source(catalog, "zhihu_rlhf"), "modelscope")
    with pytest.raises(LlfError, match="names no Hugging Face or ModelScope repository"):
        pick_hub("mine", {"split": "train"})


def test_help_has_examples(monkeypatch, capsys):
    monkeypatch.setitem(cli.VERBS, "download", "download")
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["download", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "llf-recipes download zhihu_rlhf" in out and "--hub {hf,modelscope}" in out


# ------------------------------------------------------------------ Hugging Face
def test_hf_download_into_the_hub_cache_then_offline(hub_root, env, tmp_path):
    with HubServer(hub_root) as server:
        proc = llf("zhihu_rlhf", env=served(server, env))
        commit = server.repo(*ZHIHU.split("/")).commit
    assert proc.returncode == 0, proc.stderr
    snapshot, files = listed(proc.stdout)
    repo_cache = tmp_path / "hf" / "hub" / "datasets--liyucheng--zhihu_rlhf_3k"
    assert proc.stdout.startswith(f"huggingface:{ZHIHU}@{commit}\n")
    assert snapshot == repo_cache / "snapshots" / commit
    assert (repo_cache / "refs" / "main").read_text() == commit
    assert files == [snapshot / PARQUET, snapshot / "zhihu.jsonl"]  # no README, no dataset_infos.json
    expected = zhihu_files()
    assert all(f.read_bytes() == expected[f.relative_to(snapshot).as_posix()] for f in files)
    # huggingface_hub's own layout: LFS blobs under their sha256, plain files under their git blob id
    blobs = {p.name for p in (repo_cache / "blobs").iterdir()}
    assert hashlib.sha256(expected[PARQUET]).hexdigest() in blobs
    assert Repo.blob_sha1(expected["zhihu.jsonl"]) in blobs

    # the server is gone: HF_HUB_OFFLINE=1 answers from the cache ...
    offline = llf("zhihu_rlhf", env=env | {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": server.url})
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == proc.stdout
    # ... and so does an unreachable endpoint, as huggingface_hub falls back to its cache by itself
    unreachable = llf("zhihu_rlhf", env=env | {"HF_ENDPOINT": server.url})
    assert unreachable.returncode == 0, unreachable.stderr
    assert unreachable.stdout == proc.stdout


def test_hf_connection_cut_mid_file_resumes(tmp_path, env):
    # Larger than huggingface_hub's 10 MiB write chunk, so part of the file is on disk when the connection drops.
    size = 24 * 1024 * 1024
    root = tmp_path / "hub"
    write_repo(root, ZHIHU, zhihu_files(parquet_size=size))
    with HubServer(root, cut_once={PARQUET}) as server:
        proc = llf("zhihu_rlhf", env=served(server, env))
        fetches = server.fetches(PARQUET)
    assert proc.returncode == 0, proc.stderr
    snapshot, _ = listed(proc.stdout)
    assert (snapshot / PARQUET).read_bytes() == zhihu_files(parquet_size=size)[PARQUET]
    assert len(fetches) == 2 and fetches[0] is None
    offset = int(fetches[1].removeprefix("bytes=").rstrip("-"))  # the retry asks only for what is missing
    assert 0 < offset <= size // 2


def test_hf_killed_download_completes_on_the_next_call(hub_root, env, tmp_path):
    stall = threading.Event()
    with HubServer(hub_root, stall={PARQUET: stall}) as server:
        run_env = served(server, env)
        first = subprocess.Popen(download_argv("zhihu_rlhf"), cwd=ROOT, env=run_env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        snapshots = tmp_path / "hf" / "hub" / "datasets--liyucheng--zhihu_rlhf_3k" / "snapshots"
        try:
            wait_for(lambda: server.fetches(PARQUET) and list(snapshots.glob("*/zhihu.jsonl")))
        finally:
            first.kill()
            first.wait()
        server.stall.pop(PARQUET).set()
        assert not list(snapshots.glob(f"*/{PARQUET}"))  # the half-fetched file is not in the snapshot

        proc = llf("zhihu_rlhf", env=run_env)
        assert proc.returncode == 0, proc.stderr
        _, files = listed(proc.stdout)
        assert [f.read_bytes() for f in files] == [zhihu_files()[PARQUET], zhihu_files()["zhihu.jsonl"]]
        assert len(server.fetches("zhihu.jsonl")) == 1  # the finished file was not fetched again


HUB_CASES = [  # (dataset, endpoint variable, the hub's name in messages)
    pytest.param("zhihu_rlhf", "HF_ENDPOINT", "the Hugging Face Hub", "Hugging Face", id="hf"),
    pytest.param("huanhuan", "MODELSCOPE_ENDPOINT", "ModelScope", "ModelScope", id="modelscope"),
]


@pytest.mark.parametrize("name, endpoint, hub, cache", HUB_CASES)
def test_unreachable_endpoint_says_how_to_work_offline(env, name, endpoint, hub, cache):
    proc = llf(name, env=env | {endpoint: closed_port_url()})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"error: cannot reach {hub} at http://127.0.0.1:" in proc.stderr
    for hint in (endpoint, f"`llf-recipes prepare {name} --sample-data`", f"`llf-recipes convert {name} --input FILE`"):
        assert hint in proc.stderr
    # the offline switch named is the hub's own: Hugging Face has one, ModelScope reads its cache by itself
    assert ("HF_HUB_OFFLINE=1" in proc.stderr) == (endpoint == "HF_ENDPOINT")



@pytest.mark.parametrize("name, endpoint, hub, cache", HUB_CASES)
def test_offline_without_a_cache(env, name, endpoint, hub, cache):
    proc = llf(name, env=env | {"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"not in the {cache} cache and HF_HUB_OFFLINE forbids downloading it" in proc.stderr


def test_hf_unknown_revision(hub_root, env):
    with HubServer(hub_root) as server:
        proc = llf("zhihu_rlhf", "--revision", "v9", env=served(server, env))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "has no revision 'v9'" in proc.stderr


def fragment(project: Path, name: str, source: dict) -> Path:
    (project / "dataset_info.d").mkdir(parents=True, exist_ok=True)
    entry = {"file_name": f"{name}.jsonl", "formatting": "alpaca", "columns": {"prompt": "instruction"}}
    (project / "dataset_info.d" / f"{name}.json").write_text(json.dumps({"source": source, "entries": {name: entry}}))
    return project


def test_repo_without_data_files(hub_root, env, tmp_path):
    project = fragment(tmp_path / "project", "docs_only", {"huggingface": "someone/docs_only"})
    with HubServer(hub_root) as server:
        proc = llf("docs_only", env=served(server, env), cwd=project)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ("huggingface dataset someone/docs_only has no data files (.json, .jsonl, .parquet, .csv, .tsv)"
            in proc.stderr)


def test_source_without_a_hub(env, tmp_path):
    project = fragment(tmp_path / "project", "local_only", {"split": "train"})
    proc = llf("local_only", env=env, cwd=project)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "names no Hugging Face or ModelScope repository" in proc.stderr and "register --file" in proc.stderr


def test_unknown_name_on_the_command_line(env):
    proc = llf("zhihu_rlfh", env=env)
    assert proc.returncode == 2 and "did you mean 'zhihu_rlhf'" in proc.stderr


# ------------------------------------------------------------------ ModelScope
def test_modelscope_download_into_its_cache_then_offline(hub_root, env, tmp_path):
    with HubServer(hub_root) as server:
        proc = llf("huanhuan", env=served(server, env))
    assert proc.returncode == 0, proc.stderr
    snapshot, files = listed(proc.stdout)
    # modelscope-hub's layout: <MODELSCOPE_CACHE>/datasets/<owner>--<name>/snapshots/<revision>/
    assert proc.stdout.startswith(f"modelscope:{HUANHUAN}@master\n")
    assert snapshot == tmp_path / "ms" / "datasets" / "CFYuan--Chat-huanhuan" / "snapshots" / "master"
    assert files == [snapshot / "huanhuan.json"]
    assert files[0].read_bytes() == (SAMPLES / "huanhuan.jsonl").read_bytes()

    offline = llf("huanhuan", env=env | {"HF_HUB_OFFLINE": "1", "MODELSCOPE_ENDPOINT": server.url})
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == proc.stdout
    # unreachable but cached: the cached copy, with a note that it could not be checked
    unreachable = llf("huanhuan", env=env | {"MODELSCOPE_ENDPOINT": server.url})
    assert unreachable.returncode == 0, unreachable.stderr
    assert unreachable.stdout == proc.stdout
    assert "note: ModelScope is unreachable" in unreachable.stderr


def test_modelscope_killed_download_resumes_from_its_partial_file(tmp_path, env):
    # Over modelscope-hub's 1 MiB write chunk, so the first half leaves bytes in `<file>.incomplete`.
    data = blob(3 * 1024 * 1024, seed=1)
    root = tmp_path / "hub"
    write_repo(root, HUANHUAN, {"huanhuan.json": data})
    stall = threading.Event()
    snapshot = tmp_path / "ms" / "datasets" / "CFYuan--Chat-huanhuan" / "snapshots" / "master"
    partial = snapshot / "huanhuan.json.incomplete"
    with HubServer(root, stall={"huanhuan.json": stall}) as server:
        run_env = served(server, env)
        first = subprocess.Popen(download_argv("huanhuan"), cwd=ROOT, env=run_env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: partial.exists() and partial.stat().st_size >= 1024 * 1024)
        finally:
            first.kill()
            first.wait()
        kept = partial.stat().st_size
        server.stall.pop("huanhuan.json").set()

        proc = llf("huanhuan", env=run_env)
        assert proc.returncode == 0, proc.stderr
        assert server.fetches("huanhuan.json")[-1] == f"bytes={kept}-"  # picked up where the killed run stopped
    _, files = listed(proc.stdout)
    assert files[0].read_bytes() == data and not partial.exists()


def test_modelscope_legacy_cache_layout_offline(env, tmp_path):
    # modelscope < 1.38 filed datasets under ~/.cache/modelscope/hub/datasets/<owner>/<name>/ (dots as ___)
    legacy = tmp_path / "home" / ".cache" / "modelscope" / "hub" / "datasets" / "CFYuan" / "Chat-huanhuan"
    legacy.mkdir(parents=True)
    (legacy / "huanhuan.json").write_bytes((SAMPLES / "huanhuan.jsonl").read_bytes())
    (legacy / "README.md").write_text("# hh\n")
    no_cache_var = {k: v for k, v in env.items() if k != "MODELSCOPE_CACHE"}
    proc = llf("huanhuan", env=no_cache_var | {"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"modelscope:{HUANHUAN}\nsnapshot  {legacy}\ndata      {legacy / 'huanhuan.json'}\n"


def test_modelscope_on_request_for_a_dataset_on_both_hubs(tmp_path, env):
    root = tmp_path / "hub"
    belle_files = {"Belle_open_source_0.5M.json": (SAMPLES / "belle.jsonl").read_bytes()}
    write_repo(root, "BelleGroup/train_0.5M_CN", belle_files)
    with HubServer(root) as server:
        by_flag = llf("belle_0.5m", "--hub", "modelscope", env=served(server, env))
        by_env = llf("belle_0.5m", env=served(server, env) | {"USE_MODELSCOPE_HUB": "1"})
        assert all(req.path.startswith("/api/v1/") for req in server.log)  # never asked the HF API
    assert by_flag.returncode == 0, by_flag.stderr
    assert by_flag.stdout.startswith("modelscope:BelleGroup/train_0.5M_CN@master\n")
    assert by_env.stdout == by_flag.stdout


def test_cache_dir_option_for_both_hubs(hub_root, env, tmp_path):
    cache = tmp_path / "elsewhere"
    with HubServer(hub_root) as server:
        hf = llf("zhihu_rlhf", "--cache-dir", str(cache / "hf"), env=served(server, env))
        ms = llf("huanhuan", "--cache-dir", str(cache / "ms"), env=served(server, env))
    assert hf.returncode == 0 and ms.returncode == 0, hf.stderr + ms.stderr
    assert listed(hf.stdout)[0].is_relative_to(cache / "hf" / "datasets--liyucheng--zhihu_rlhf_3k" / "snapshots")
    assert listed(ms.stdout)[0] == cache / "ms" / "datasets" / "CFYuan--Chat-huanhuan" / "snapshots" / "master"
    # nothing went to HF_HOME or MODELSCOPE_CACHE (modelscope-hub may still create the empty cache root)
    assert not (tmp_path / "hf" / "hub").exists() and not (tmp_path / "ms" / "datasets").exists()
    for name, sub, out in (("zhihu_rlhf", "hf", hf.stdout), ("huanhuan", "ms", ms.stdout)):
        offline = llf(name, "--cache-dir", str(cache / sub), env=env | {"HF_HUB_OFFLINE": "1"})
        assert offline.stdout == out, offline.stderr


# ------------------------------------------------------------------ import hygiene
def test_download_does_not_import_torch(hub_root, env, tmp_path):
    poison = tmp_path / "poison"
    for mod in ("torch", "transformers", "llamafactory"):
        (poison / mod).mkdir(parents=True)
        (poison / mod / "__init__.py").write_text(f"raise ImportError('{mod} imported by download')\n")
    with HubServer(hub_root) as server:
        for name in ("zhihu_rlhf", "huanhuan"):
            proc = llf(name, env=served(server, env) | {"PYTHONPATH": str(poison)})
            assert proc.returncode == 0, proc.stderr

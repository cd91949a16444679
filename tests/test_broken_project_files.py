"""One broken recipe or hostfile in a project does not hide the others: `list` shows the rest and names it, and
`validate --all --all-hostfiles` checks everything else and counts it in its summary."""

import json

import pytest

MISMATCH = "description: two stages, one document\nstages:\n  - name: sft\n  - name: dpo\n---\nstage: sft\n"
UNKNOWN_STAGE_KEY = "description: x\nstages:\n  - name: sft\n    lerning_rate: 1\n---\nstage: sft\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "hostfiles").mkdir()
    (tmp_path / "recipes" / "mismatch.yaml").write_text(MISMATCH, encoding="utf-8")
    (tmp_path / "recipes" / "badkey.yaml").write_text(UNKNOWN_STAGE_KEY, encoding="utf-8")
    (tmp_path / "hostfiles" / "mybad").write_text("node1 slots=x\n", encoding="utf-8")
    (tmp_path / "hostfiles" / "mygood").write_text("node1 slots=2\nnode2 slots=2\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_list_shows_the_other_recipes_and_names_the_broken_ones(cli, project):
    code, out, err = cli("list", "--json")
    names = {row["name"] for row in json.loads(out)}
    assert {"zhihu", "sft-huanhuan"} <= names and not names & {"mismatch", "badkey"}
    assert code == 1
    assert "mismatch.yaml: `stages` lists 2 stage(s) but the file has 1" in err
    assert "badkey.yaml (stage sft): unknown stage key 'lerning_rate'" in err
    code, out, err = cli("list")
    assert code == 1 and "zhihu" in out and "2 file(s) not listed" in err


def test_list_hostfiles_shows_the_others(cli, project):
    code, out, err = cli("list", "--hostfiles", "--json")
    names = {row["name"] for row in json.loads(out)}
    assert {"1gpu", "2node-8gpu", "mygood"} <= names and "mybad" not in names
    assert code == 1 and "mybad:1: slots='x'" in err


def test_validate_all_reports_every_problem_and_a_summary(cli, project):
    code, out, err = cli("validate", "--all", "--all-hostfiles")
    assert code == 1
    assert "FAIL mismatch" in err and "FAIL badkey" in err and "FAIL hostfile" in err and "mybad" in err
    # every other recipe was checked on every readable layout (3 bundled + mygood)
    assert "on 4 layout(s)" in out and "3 failed" in out
    checked = int(out.split("validated ")[1].split(" stage(s)")[0])
    assert checked >= 4 * 14
    # a recipe named on the command line still stops with its one-line error
    code, out, err = cli("validate", "mismatch")
    assert code != 0 and "Traceback" not in err and "lists 2 stage(s)" in err

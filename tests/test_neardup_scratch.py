"""clean --near-dedup's scratch folder (beside the output) is removed however the run ends: a full disk, a bad
line, a failure while it is being made, Ctrl-C; and no output is left behind either."""

import builtins
import errno
import json

import pytest

from llf_recipes.data import neardup_index


def rows_file(tmp_path, n=300, tail=""):
    src = tmp_path / "raw.jsonl"
    src.write_text("".join(json.dumps({"p": f"row number {i} of some text"}) + "\n" for i in range(n)) + tail)
    return src


def left(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name != "raw.jsonl")


def full_disk_for(monkeypatch, names):
    """The scratch files whose name is in `names` are written to /dev/full: their last bytes fail with ENOSPC."""
    real = builtins.open

    def fake(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).rsplit("/", 1)[-1] in names:
            return real("/dev/full", mode, *args, **kwargs)
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(neardup_index, "open", fake, raising=False)


def test_a_full_disk_while_resolving_leaves_no_scratch_folder(cli, tmp_path, monkeypatch):
    full_disk_for(monkeypatch, {"lines", "low", *(f"band{b}" for b in range(64))})
    code, _, err = cli("clean", rows_file(tmp_path), "-o", tmp_path / "out.jsonl", "--near-dedup")
    assert code != 0 and "no space" in err, err
    assert left(tmp_path) == []


def test_a_bad_line_on_a_full_disk_is_reported_and_leaves_no_scratch_folder(cli, tmp_path, monkeypatch):
    full_disk_for(monkeypatch, {"lines", "band3"})
    code, _, err = cli("clean", rows_file(tmp_path, tail="not json\n"), "-o", tmp_path / "out.jsonl", "--near-dedup")
    assert code != 0 and "raw.jsonl:301" in err, err
    assert left(tmp_path) == []


def test_a_failure_while_making_the_scratch_files_removes_the_folder(cli, tmp_path, monkeypatch):
    real, opened = builtins.open, []

    def fake(path, mode="r", *args, **kwargs):
        if "w" in mode and len(opened) == 5:
            raise OSError(errno.EMFILE, "Too many open files", str(path))
        fh = real(path, mode, *args, **kwargs)
        opened.append(fh)
        return fh

    monkeypatch.setattr(neardup_index, "open", fake, raising=False)
    code, _, err = cli("clean", rows_file(tmp_path), "-o", tmp_path / "out.jsonl", "--near-dedup")
    assert code != 0, err
    assert left(tmp_path) == []
    assert all(fh.closed for fh in opened)


def test_ctrl_c_while_resolving_leaves_neither_scratch_folder_nor_output(tmp_path, monkeypatch):
    from llf_recipes.data.clean import CleanOptions, clean

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(neardup_index.NearDuplicates, "resolve", interrupted)
    with pytest.raises(KeyboardInterrupt):
        clean(CleanOptions(input=rows_file(tmp_path), output=tmp_path / "out.jsonl", near_dedup=0.8))
    assert left(tmp_path) == []

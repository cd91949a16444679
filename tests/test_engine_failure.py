"""An engine's exception inside ask, chat or generate becomes one line naming the log, with the traceback in the log."""

from llf_recipes import console


def test_an_engine_exception_is_one_line_naming_the_log_with_its_traceback_in_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(console, "_VERBOSE", False)
    log = tmp_path / "llf-ask.log"
    log.write_text("loading the model\nshape mismatch in layer 3\n", encoding="utf-8")
    try:
        raise RuntimeError("size mismatch\nfor lm_head.weight")
    except RuntimeError as exc:
        error = console.engine_failure(log, "the model of saves/x did not answer", exc, "ask")
    assert error.message == "the model of saves/x did not answer: RuntimeError: size mismatch"
    assert error.where == str(log)
    text = log.read_text(encoding="utf-8")
    assert text.startswith("loading the model\n") and "Traceback (most recent call last)" in text
    assert "RuntimeError: size mismatch" in text
    err = capsys.readouterr().err
    assert "shape mismatch in layer 3" in err and f"ask: full log {log}" in err


def test_without_a_verb_the_tail_is_not_shown(tmp_path, capsys):
    log = tmp_path / "llf-generate.log"
    try:
        raise ValueError("bad row")
    except ValueError as exc:
        error = console.engine_failure(log, "the model did not answer row 3", exc)
    assert error.message == "the model did not answer row 3: ValueError: bad row"
    assert "ValueError: bad row" in log.read_text(encoding="utf-8") and capsys.readouterr().err == ""

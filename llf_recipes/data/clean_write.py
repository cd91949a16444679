"""How `clean` writes: rows renamed and split, rejects recorded, a stop reported with its file:line, a progress bar."""

from __future__ import annotations

from contextlib import contextmanager

import orjson

from llf_recipes.data.clean_check import CleanOptions, CleanStats
from llf_recipes.data.clean_lines import BadLine, renderer
from llf_recipes.errors import LlfError

PROGRESS_MIN_BYTES = 32 << 20  # smaller inputs finish in well under a second: a bar would only flicker


class Writer:
    """Renames, splits and counts the rows written; rows left as they were are copied byte for byte."""

    def __init__(self, opts: CleanOptions, out, val, stats: CleanStats, tokenizer=None):
        self.out, self.val, self.stats = out, val, stats
        self.render = renderer(opts)
        self.fields = opts.fields
        self.tokenizer = tokenizer if opts.token_stats else None
        if self.tokenizer is not None:
            from array import array

            stats.tokens = array("I")
        self.needs_row = bool(opts.rename) or bool(opts.val_ratio) or self.tokenizer is not None

    def count_tokens(self, row: dict) -> None:
        values = [row.get(name) for name in self.fields] if self.fields else row.values()
        texts = [v for v in values if v.__class__ is str]
        encoded = self.tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []
        self.stats.tokens.append(sum(len(e) for e in encoded))

    def write(self, row: dict | None, line: bytes, nchars: int) -> None:
        if self.tokenizer is not None:
            self.count_tokens(row)
        data, to_val = self.render(row, line if line.endswith(b"\n") else line + b"\n")
        if to_val:
            self.val.write(data)
            self.stats.val_written += 1
        else:
            self.out.write(data)
            self.stats.written += 1
        self.stats.add_chars(nchars)


class Nowhere:
    """A rejects file for a second pass: its bad lines were set aside by the first."""

    def write(self, data: bytes) -> None:
        pass


def stop(where: str, lineno: int, bad: BadLine) -> LlfError:
    fix = f"{bad.fix}; or --skip-bad to set bad lines aside" if bad.fix else "fix the line, or --skip-bad to set it aside"
    return LlfError(bad.reason, key=bad.field, where=f"{where}:{lineno}", fix=fix)


def reject(rejects, stats: CleanStats, where: str, lineno: int, line: bytes, bad: BadLine) -> None:
    if rejects is None:
        raise stop(where, lineno, bad)
    record = {"line": lineno, "reason": bad.reason, "field": bad.field,
              "text": line.rstrip(b"\r\n").decode("utf-8", "backslashreplace")}
    rejects.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    stats.rejected += 1


@contextmanager
def progress_bar(size: int, show: bool, name: str):
    """A function of the bytes read so far that moves a bar on stderr, when asked for (a terminal, a long input);
    else None."""
    if not show:
        yield None
        return
    from rich.console import Console  # imported only when a bar is drawn: keeps plain runs small
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"cleaning {name}", total=size)
        yield lambda done: bar.update(task, completed=done)


@contextmanager
def progress(fh, size: int, show: bool, name: str):
    """The file's lines, with a bar of bytes read (see progress_bar)."""
    with progress_bar(size, show, name) as advance:
        if advance is None:
            yield fh
            return

        def lines():
            for i, line in enumerate(fh):
                if not i & 0x1FFF:  # about every 10 MB of typical rows: updates cost nothing measurable
                    advance(fh.tell())
                yield line

        yield lines()

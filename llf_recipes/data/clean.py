"""Clean a JSONL file in one streaming pass: drop empty rows, rename fields, limit length, dedup, sample, split.

Memory stays flat whatever the input size, except for two things: each line is parsed at most once per pass and
dropped, but --dedup and --dedup-on keep a 16-byte digest per distinct row (about 100 bytes each in a Python set), and
--near-dedup's step between its passes holds per-row arrays (neardup_index.py); sampling holds only the N sampled rows
as (line number, line bytes). Outputs are
temporary siblings renamed into place after the last line, so a bad line stops the run with nothing half-written.

Per row, in order: parse, check the named fields exist, drop empty, character limit, token limit, dedup (whole row
or --dedup-on fields), near-dedup (see neardup.py), sample.
Rename and the train/validation split apply to the rows written; every field name given refers to the input.

A sample decides which lines it could pick before parsing them (Sample). With --sample and none of --dedup, --stats or
--skip-bad, only those lines are parsed, about 1.5 N when most rows pass (N ln(rows / N) more in a second pass when
fewer than two thirds do); the others are passed over as bytes, so a bad line among them is not reported. The rows
picked are the same as when every line is parsed (same seed, same rows), and the run's summary says how many lines were
parsed. --stats, --skip-bad, --dedup, --dedup-on and --near-dedup need every line, so they parse and check them all.

When every line is parsed in a JSONL file of 64 MB or more, on two cores or more, and without a tokenizer, a worker
process checks chunks of the file at the same time as this one (clean_parallel.py); the merge is in file order, so the
outputs, the counts and a stop's file:line are those of one process. --near-dedup reads the input twice: a first pass
(neardup_pass.py, with a worker from 8 MB) computes the signatures and decides which rows are near-duplicates, the
second is the ordinary pass, which drops them.

The modules: clean_check (options, counts, tokenizer), clean_lines (the per-line checks, a chunk's lines, the worker),
clean_sample, clean_read (one pass in this process), clean_parallel (one pass with a worker), clean_write.
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from io import FileIO
from operator import itemgetter
from pathlib import Path

import orjson

from llf_recipes.atomic import open_together
from llf_recipes.data import clean_parallel
from llf_recipes.data.clean_check import ONE_OBJECT_PER_LINE, CleanOptions, CleanStats, first_rows, load_tokenizer
from llf_recipes.data.clean_lines import line_checker
from llf_recipes.data.clean_read import Reader
from llf_recipes.data.clean_sample import Sample, first_cap
from llf_recipes.data.clean_write import PROGRESS_MIN_BYTES, Nowhere, Writer, progress, progress_bar
from llf_recipes.data.rows import open_as_lines
from llf_recipes.errors import LlfError

__all__ = ["CleanOptions", "CleanStats", "Sample", "clean", "first_cap"]


def clean(opts: CleanOptions) -> CleanStats:
    """Clean opts.input into opts.output (and opts.val_out, opts.rejects); see the module's docstring.

    A sample takes one pass with the lines below a cap (first_cap), and when fewer rows than asked for pass among
    those, a second pass draws the rest uniformly from the other lines: together, the bottom keys of every row that
    passes. Both passes run whether or not every line is parsed, so --stats does not change the rows picked.
    """
    size = _input_size(opts.input)
    needs_tokenizer = opts.max_tokens is not None or opts.token_stats
    tokenizer = load_tokenizer(opts.tokenizer) if needs_tokenizer else None
    stats = CleanStats()
    every_line = opts.parses_every_line
    show = opts.progress and size >= PROGRESS_MIN_BYTES
    with ExitStack() as stack:
        fh, size = open_as_lines(opts.input, size)  # a JSON array file is read as its rows, one per line
        stack.enter_context(fh)
        stats.numbered = "line" if isinstance(fh.raw, FileIO) else "row"
        first_rows(fh, opts, stats, str(opts.input))  # a misspelled field stops here, before any output exists
        # train, validation and rejects appear together; a rejects file of an earlier run goes in the same commit
        out, val, rejects = stack.enter_context(open_together(
            [opts.output, opts.val_out, opts.rejects if opts.skip_bad else None],
            remove=[] if opts.skip_bad else [opts.rejects]))
        writer = Writer(opts, out, val, stats, tokenizer)
        reader = Reader(str(opts.input), line_checker(opts, tokenizer), writer)
        if opts.near_dedup is not None:  # a first pass finds the near-duplicates the second drops
            from llf_recipes.data.neardup_pass import find_near_duplicates

            stats.near = find_near_duplicates(opts, fh, size, isinstance(fh.raw, FileIO), reader.where, reader.check,
                                              show)
        workers = clean_parallel.workers_for(opts, size, isinstance(fh.raw, FileIO))
        sample = Sample(opts.sample, opts.seed, first_cap(fh.peek(1 << 20), size, opts.sample)) if opts.sample else None
        if workers:
            with progress_bar(size, show, opts.input.name) as advance:
                kept = clean_parallel.every_line(fh.fileno(), size, reader.where, writer, sample, rejects, stats, opts,
                                                 workers, advance)
            stats.read = stats.parsed + stats.rejected
        else:
            with progress(fh, size, show, opts.input.name) as lines:
                if every_line:
                    kept = reader.every_line(lines, sample, rejects, stats, opts)
                    stats.read = stats.parsed + stats.rejected
                else:
                    reader.sampled_lines(lines, sample, stats)
        held = sample.held if sample is not None else []
        if sample is not None and sample.short:
            rest = Sample(sample.size - len(held), f"{opts.seed}/rest")
            taken = frozenset(lineno for _, lineno, _ in held)
            fh.seek(0)
            with progress(fh, size, show, opts.input.name) as lines:
                if opts.deduplicates:  # whether a row is a duplicate depends on every row before it
                    reader.every_line(lines, rest, Nowhere() if rejects else None, CleanStats(near=stats.near), opts,
                                      taken)
                else:
                    reader.sampled_lines(lines, rest, CleanStats() if every_line else stats, taken, opts.skip_bad)
            held = held + rest.held
        # Without a sample every line was parsed; a short first pass is followed by one that parses lines until
        # enough rows pass, and so finds a row if there is any.
        if not stats.parsed and not stats.rejected:
            raise LlfError("has no rows (only blank lines)", where=reader.where, fix=ONE_OBJECT_PER_LINE)
        if not stats.parsed:  # --skip-bad set every line aside: this is not a file of rows, and nothing is written
            raise LlfError(f"has no rows: all {stats.rejected} of its non-blank lines are bad", where=reader.where,
                           fix="check the path; without --skip-bad the run stops at the first bad line and says why")
        # a sample holds lines (or, from worker processes, where they are), not rows: parsed, CJK rows take more
        # memory than their UTF-8 lines
        loads = orjson.loads
        for _, _, item in sorted(held, key=itemgetter(1)):
            line, nchars = (os.pread(fh.fileno(), item[1], item[0]), item[2]) if len(item) == 3 else item
            writer.write(loads(line) if writer.needs_row else None, line, nchars)
        if every_line and sample is not None:
            stats.dropped["not_sampled"] = kept - len(held)
    return stats



def _input_size(path: Path) -> int:
    import stat

    try:
        info = path.stat()
    except FileNotFoundError:
        raise LlfError(f"{path} does not exist", key="IN") from None
    if stat.S_ISDIR(info.st_mode):
        raise LlfError(f"{path} is a directory", key="IN", fix="give one JSONL file")
    if not stat.S_ISREG(info.st_mode):  # a pipe, a terminal, a device: it cannot be read from its start again
        raise LlfError(f"{path} is not a regular file: clean measures its input and reads it again from the start, "
                       "which a pipe does not allow", key="IN", fix="save the rows to a file first, e.g. `cmd > rows.jsonl`, "
                       "and clean that")
    size = info.st_size
    if size == 0:
        raise LlfError("the file is empty", where=str(path), fix=ONE_OBJECT_PER_LINE)
    return size



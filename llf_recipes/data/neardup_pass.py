"""The first of `clean --near-dedup`'s two passes: every line checked as the second pass will check it (the same
checks, the same exact dedup), and the MinHash signature of each row that passes collected in file order, then
resolved into the rows to drop (neardup_index.py). Nothing is written; the second pass is the ordinary one, which
drops those rows. A bad line stops this pass with the message the second would give.

Signatures cost far more than the checks (about 32 us against 2 us of CPU per row of 1.3 kB), so on two cores or more
a worker process computes them for chunks of a file of SIGN_MIN_BYTES or more (clean_parallel.py, the same chunks,
merged in file order) while this process computes them for others: the rows dropped are the same with or without it.
"""

from __future__ import annotations

from llf_recipes.data import clean_parallel
from llf_recipes.data.clean_check import CleanOptions, CleanStats
from llf_recipes.data.clean_read import Reader
from llf_recipes.data.clean_write import Nowhere, progress, progress_bar

SIGN_MIN_BYTES = 8 << 20  # about 6,000 rows of 1.3 kB: 0.2 s of signatures, what starting a worker costs


class _Discard:
    """The writer of the first pass: rows are only signed."""

    out, val = Nowhere(), None

    def write(self, row, line: bytes, nchars: int) -> None:
        pass


def find_near_duplicates(opts: CleanOptions, fh, size: int, is_file: bool, where: str, check, show: bool):
    """The NearDuplicates of opts.input, resolved; `fh` is read from its start and left at its start."""
    from llf_recipes.data.neardup_index import NearDuplicates

    near = NearDuplicates(opts.near_dedup, opts.fields, opts.output)
    try:
        stats = CleanStats(near=near)
        rejects = Nowhere() if opts.skip_bad else None  # the second pass writes them
        workers = clean_parallel.workers_for(opts, size, is_file, min_bytes=SIGN_MIN_BYTES)
        name = f"{opts.input.name} (1 of 2: near-duplicates)"
        if workers:
            with progress_bar(size, show, name) as advance:
                clean_parallel.every_line(fh.fileno(), size, where, _Discard(), None, rejects, stats, opts, workers,
                                          advance)
        else:
            with progress(fh, size, show, name) as lines:
                Reader(where, check, _Discard()).every_line(lines, None, rejects, stats, opts)
        near.resolve()
    finally:
        near.close()
    fh.seek(0)
    return near

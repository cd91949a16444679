"""One pass of `clean` over the lines in this process: every line parsed, or only those a sample can pick."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from llf_recipes.data.clean_check import CleanOptions, CleanStats
from llf_recipes.data.clean_lines import BadLine, digester
from llf_recipes.data.clean_sample import Sample
from llf_recipes.data.clean_write import Writer, reject, stop


@dataclass
class Reader:
    """One pass over the lines: `where` names the file in messages, `check` is line_checker's, and rows that pass
    go to `writer`, or to a sample as (line, characters)."""

    where: str
    check: Callable
    writer: Writer

    def every_line(self, lines, sample: Sample | None, rejects, stats: CleanStats, opts: CleanOptions,
                   taken: frozenset = frozenset()) -> int:
        """Parse and check every line: rows that pass are written, or offered to the sample when it picks their line
        (unless `taken`). Returns how many rows passed."""
        where, check, write, dropped = self.where, self.check, self.writer.write, stats.dropped
        digest_of = digester(opts)
        seen: set[bytes] | None = set() if digest_of is not None else None
        near = stats.near  # --near-dedup: collects signatures in a first pass, drops what they found in the second
        next_line = sample.next_line if sample is not None else 0
        lineno = kept = parsed = 0
        for lineno, line in enumerate(lines, 1):
            try:
                checked = check(line)
            except BadLine as bad:
                reject(rejects, stats, where, lineno, line, bad)
                checked = None
            if checked is not None:
                row, reason, nchars = checked
                parsed += 1
                if reason is None and seen is not None:
                    digest = digest_of(row)
                    if digest in seen:
                        reason = "duplicate"
                    else:
                        seen.add(digest)
                if reason is None and near is not None and near.is_duplicate(lineno, row):
                    reason = "near_duplicate"
                if reason is not None:
                    dropped[reason] += 1
                else:
                    kept += 1
                    if sample is None:
                        write(row, line, nchars)
            if lineno == next_line:
                passed = checked is not None and reason is None and lineno not in taken
                sample.offer(lineno, (line, nchars) if passed else None)
                next_line = sample.next_line
        stats.lines, stats.parsed = lineno, parsed
        return kept

    def sampled_lines(self, lines, sample: Sample, stats: CleanStats, taken: frozenset = frozenset(),
                      skip_bad: bool = False) -> None:
        """Parse and check only the lines the sample picks (except `taken` ones), and the first line so that a file
        that is not JSONL at all stops the run; pass over the others as bytes. A bad line stops the run, or under
        `skip_bad` (set aside by an earlier pass) counts as no row."""
        where, check, dropped, offer = self.where, self.check, stats.dropped, sample.offer
        numbered = enumerate(lines, 1)
        lineno = 0
        if sample.next_line > 1 and not skip_bad and (first := next(numbered, None)) is not None:
            lineno = 1
            try:
                checked = check(first[1])
            except BadLine as bad:
                raise stop(where, lineno, bad) from None
            stats.parsed += checked is not None
        while True:
            gap = sample.next_line - lineno - 1
            if gap:
                passed = deque(islice(numbered, gap), maxlen=1)  # C speed: no Python bytecode per line passed over
                if passed:
                    lineno = passed[0][0]
            picked = next(numbered, None)
            if picked is None:
                break
            lineno, line = picked
            if lineno in taken:
                offer(lineno, None)
                continue
            try:
                checked = check(line)
            except BadLine as bad:
                if not skip_bad:
                    raise stop(where, lineno, bad) from None
                checked = None
            if checked is None:
                offer(lineno, None)
                continue
            stats.parsed += 1
            _, reason, nchars = checked
            if reason is None:
                offer(lineno, (line, nchars))
            else:
                dropped[reason] += 1
                offer(lineno, None)
        stats.lines = max(stats.lines, lineno)



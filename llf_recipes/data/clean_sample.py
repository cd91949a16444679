"""The sample `clean` takes: uniform, seeded, and decided before a line is parsed."""

from __future__ import annotations

import math
import random
import sys
from heapq import heapify, heapreplace


class Sample:
    """A uniform random sample of `size` rows that says, before a line is parsed, whether that line can enter.

    Every line has a uniform random key, and the sample is the `size` rows with the smallest keys among the rows that
    pass the filters (bottom-k sampling). Only a line whose key is below the threshold can enter: `cap` at first, and
    the largest key held once `size` rows are held. The number of lines before the next such line is geometric in the
    threshold and that line's key is uniform below it, so keys are drawn only for the lines that can enter
    (`next_line`) and the lines in between need not be parsed. Keys do not depend on what a line holds, so whichever
    rows pass, the sample is uniform among them, and it is the same whether the other lines are parsed or not.

    With cap 1 about size * (1 + ln(lines / size)) lines are looked at; a cap near size / lines cuts that to about
    cap * lines, but when fewer than `size` rows pass among them, the sample is short (see `clean`: a second pass
    takes the rest).
    """

    def __init__(self, size: int, seed: int | str, cap: float = 1.0):
        self.size, self.cap = size, cap
        self.held: list[tuple[float, int, object]] = []  # (-key, line number, item), a max-heap by key when full
        self.next_line = 0
        self._random = random.Random(seed).random
        self._threshold = cap
        self.offer(0, None)  # schedules the first line

    @property
    def short(self) -> bool:
        """Fewer rows held than asked for although lines above the cap were never looked at."""
        return len(self.held) < self.size and self.cap < 1.0

    def offer(self, lineno: int, item) -> None:
        """Line `lineno`, which must be `next_line`: `item` to hold for a row that passed, None for any other line."""
        if item is not None:
            held = self.held
            if len(held) < self.size:
                held.append((-self._key, lineno, item))  # a heap only once full: what matters is the largest key
                if len(held) == self.size:
                    heapify(held)
                    self._threshold = -held[0][0]
            else:
                heapreplace(held, (-self._key, lineno, item))  # the key is below the threshold: the largest leaves
                self._threshold = -held[0][0]
        rand, threshold = self._random, self._threshold
        if threshold >= 1.0:
            self.next_line, self._key = lineno + 1, rand()
            return
        # 1 - rand() lies in (0, 1], where log() is defined; a threshold of exactly 0 admits no further line
        gap = math.log(1.0 - rand()) / math.log1p(-threshold) if threshold > 0.0 else math.inf
        self.next_line = lineno + 1 + int(min(gap, sys.maxsize // 2))
        self._key = threshold * rand()


def first_cap(head: bytes, size: int, rows: int) -> float:
    """A cap (see Sample) for `rows` out of a file of `size` bytes that starts with `head`: enough when two thirds of
    the lines pass. Any cap gives a uniform sample; the cap sets how many lines are parsed, and which rows a seed picks.
    """
    lines = max(1.0, size * max(head.count(b"\n"), 1) / max(len(head), 1))
    return min(1.0, 1.5 * (rows + 4 * math.sqrt(rows)) / lines)



"""clean --near-dedup at each --threshold against the exact answer: the rows it drops that the exact answer drops, the
others it drops, and the time.

    python bench/bench_near_threshold.py [--rows 3000] [--thresholds 0.9,0.8,...] [--out bench/results/near_threshold.json]

The input is generated word text: two thirds of the rows are 30 to 70 words drawn from 4,000 with Zipf weights, the
rest copies of them with up to half their words replaced, shuffled. The exact answer takes each row in file order and
drops it when its exact character 5-gram similarity with a row kept before reaches the threshold (quadratic: keep
--rows to a few thousand).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT

sys.path.insert(0, str(ROOT))

from llf_recipes.data.clean import CleanOptions, clean
from llf_recipes.data.neardup import jaccard, shingles
from llf_recipes.data.neardup_index import band_split


def generated_rows(n: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    syllables = ["ka", "to", "ri", "ne", "mo", "sa", "lu", "pe", "di", "go", "ba", "chi", "en", "or", "st", "th", "an",
                 "is"]
    vocab = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(4000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    base = [" ".join(rng.choices(vocab, weights, k=rng.randint(30, 70))) for _ in range(n * 2 // 3)]
    rows = list(base)
    while len(rows) < n:
        words = rng.choice(base).split()
        for _ in range(rng.randint(1, len(words) // 2)):
            words[rng.randrange(len(words))] = rng.choices(vocab, weights)[0]
        rows.append(" ".join(words))
    rng.shuffle(rows)
    return rows


def exact_drops(grams: list[set], threshold: float) -> set[int]:
    kept, dropped = [], set()
    for i, g in enumerate(grams):
        if any(jaccard(g, grams[k]) >= threshold for k in kept):
            dropped.add(i + 1)
        else:
            kept.append(i)
    return dropped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--thresholds", default="0.9,0.8,0.6,0.5,0.4,0.3,0.2,0.1,0.05")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "near_threshold.json"))
    args = ap.parse_args()
    rows = generated_rows(args.rows)
    grams = [shingles(r) for r in rows]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text("".join(json.dumps({"t": r}) + "\n" for r in rows))
        for threshold in map(float, args.thresholds.split(",")):
            exact = exact_drops(grams, threshold)
            start = time.perf_counter()
            stats = clean(CleanOptions(input=src, output=Path(tmp) / "out.jsonl", near_dedup=threshold))
            wall = time.perf_counter() - start
            got = set(stats.near.dropped.tolist())
            bands, values = band_split(threshold)
            r = results[str(threshold)] = {
                "bands": bands, "values_per_band": values, "exact_drops": len(exact), "dropped": len(got),
                "recall": round(len(got & exact) / max(1, len(exact)), 3), "others_dropped": len(got - exact),
                "wall_s": round(wall, 3)}
            print(f"threshold {threshold:<5} {bands:>3} x {values:<3} exact {r['exact_drops']:>6}  dropped "
                  f"{r['dropped']:>6}  recall {r['recall']:.2f}  others {r['others_dropped']:>5}  {wall:.2f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
                               "rows": args.rows, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

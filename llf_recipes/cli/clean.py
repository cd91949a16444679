"""`llf-recipes clean IN -o OUT`: the usual JSONL cleaning pipeline (jq + shuf) as options of one streaming pass."""

from __future__ import annotations

import sys
from pathlib import Path

from llf_recipes.cli.verb import add_verb
from llf_recipes.errors import LlfError

DROP_REASONS = ("empty", "max_chars", "max_tokens", "duplicate", "near_duplicate", "not_sampled")


def add_parser(sub) -> None:
    p = add_verb(sub, "clean", "clean a JSONL file in one streaming pass: drop empty, rename, length limit, dedup, "
                               "sample, split", """
        llf-recipes clean raw.jsonl -o data/sft.jsonl --drop-empty --fields input_text,target_text \\
            --rename input_text=prompt,target_text=response --max-chars 4096 --sample 10000 --seed 42
        llf-recipes clean raw.jsonl -o clean.jsonl --dedup --drop-empty --stats
        llf-recipes clean raw.jsonl -o clean.jsonl --dedup-on prompt --near-dedup --threshold 0.8 --fields prompt,response
        llf-recipes clean raw.jsonl -o clean.jsonl --max-tokens 2048 --tokenizer Qwen2.5-0.5B-Instruct/tokenizer.json
        llf-recipes clean raw.jsonl -o train.jsonl --val-ratio 0.02 --val-out val.jsonl --group-by conversation_id
        llf-recipes clean messy.jsonl -o clean.jsonl --skip-bad     # bad lines go to clean.rejects.jsonl
    """)
    p.description += """

Per row, in order: parse, drop empty, --max-chars, --max-tokens, --dedup/--dedup-on, --near-dedup, --sample; --rename and the split apply to
the rows written. Field names always refer to the input (before --rename). A bad line (invalid JSON or UTF-8, a BOM,
not an object, a named field missing) stops the run with its line number and nothing written, unless --skip-bad.
A field that none of the first 1000 rows has is refused before the pass, even with --skip-bad. --drop-empty without
--fields drops a row when any string field is empty (alpaca's input often is): name the fields that must hold text.

--sample parses only the lines it could pick (about 1.5 N when most rows pass) unless --dedup, --stats or --skip-bad
is given: a bad line among the others goes unnoticed. The same seed picks the same rows either way; add --stats to
check every line and count every drop reason."""
    p.add_argument("input", metavar="IN", help="JSONL file (one JSON object per line, UTF-8 without BOM), or a JSON array of objects")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="cleaned JSONL (the training split with --val-ratio)")
    p.add_argument("--fields", metavar="A,B", help="the text fields that --drop-empty, --max-chars and --max-tokens "
                                                   "look at, required in every row (default: every string field)")
    p.add_argument("--drop-empty", action="store_true", help="drop rows whose text fields are null, empty or white space")
    p.add_argument("--rename", metavar="OLD=NEW,...", help="rename fields in the rows written (other fields are kept)")
    p.add_argument("--max-chars", type=int, metavar="N", help="keep rows with fewer than N characters over the text fields")
    p.add_argument("--max-tokens", type=int, metavar="N", help="keep rows with fewer than N tokens over the text fields")
    p.add_argument("--tokenizer", metavar="PATH", help="for --max-tokens and --token-stats: a Hugging Face tokenizer.json "
                                                       "(or its directory)")
    p.add_argument("--token-stats", action="store_true", help="print the tokens per row written (text fields, no chat "
                                                              "template): percentiles and rows at or over --cutoff")
    p.add_argument("--cutoff", type=int, default=2048, metavar="N",
                   help="for --token-stats: LLaMA-Factory's cutoff_len (default: 2048, its default)")
    p.add_argument("--dedup", action="store_true", help="drop exact duplicate rows (key order ignored; about 100 bytes "
                                                        "of memory per distinct row)")
    p.add_argument("--dedup-on", metavar="A,B", help="drop rows whose values of these fields repeat an earlier row's "
                                                     "(exact), e.g. --dedup-on prompt")
    p.add_argument("--near-dedup", action="store_true",
                   help="drop rows whose text (--fields, or every string) is near an earlier row's: MinHash over "
                        "character 5-grams (works for Chinese); reads the input twice, with 8 + 8 x bands + 128 "
                        "bytes per row in a temporary directory beside the output (248 at the default --threshold "
                        "0.8, 14 bands; at most 1,160, near 0)")
    p.add_argument("--threshold", type=float, metavar="S", help="for --near-dedup: the estimated Jaccard similarity "
                                                               "of character 5-grams from which rows are near-duplicates "
                                                               "(default: 0.8)")
    p.add_argument("--sample", type=int, metavar="N", help="keep a uniform random sample of N of the rows that pass, in input order; "
                                                    "parses only the lines it could pick")
    p.add_argument("--seed", type=int, default=0, help="for --sample and --val-ratio (default: 0)")
    p.add_argument("--val-ratio", type=float, metavar="R", help="send about this fraction of rows to --val-out")
    p.add_argument("--val-out", metavar="FILE", help="the validation split's JSONL")
    p.add_argument("--group-by", metavar="KEY", help="split by KEY's value: rows sharing it stay on the same side")
    p.add_argument("--skip-bad", action="store_true", help="set bad lines aside in OUT's .rejects.jsonl (line, reason) "
                                                           "instead of stopping")
    p.add_argument("--stats", action="store_true", help="print rows read, dropped per reason, written; characters per row")
    p.set_defaults(func=main)


def _names(spec: str | None, option: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in (spec or "").split(",") if s.strip())
    if spec is not None and not names:
        raise LlfError(f"{option} names no field", key=option, fix=f"e.g. {option} input_text,target_text")
    return names


def _renames(spec: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in _names(spec, "--rename"):
        old, eq, new = (s.strip() for s in item.partition("="))
        if not eq or not old or not new:
            raise LlfError(f"--rename item {item!r} is not OLD=NEW", key="--rename", fix="e.g. --rename input_text=prompt")
        if old in out:
            raise LlfError(f"--rename names {old!r} twice", key="--rename")
        out[old] = new
    if len(set(out.values())) < len(out):
        raise LlfError("--rename gives two fields the same new name", key="--rename")
    return out


def _positive(value, option: str):
    if value is not None and value <= 0:
        raise LlfError(f"{option} must be positive, not {value}", key=option)
    return value


def options_from(args):
    from llf_recipes.data.clean import CleanOptions

    if args.max_tokens is not None and args.tokenizer is None:
        raise LlfError("--max-tokens and --tokenizer go together", key="--max-tokens",
                       fix="--max-tokens 2048 --tokenizer path/to/tokenizer.json")
    _positive(args.cutoff, "--cutoff")
    if args.token_stats and args.tokenizer is None:
        raise LlfError("--token-stats needs --tokenizer", key="--token-stats",
                       fix="--token-stats --tokenizer path/to/tokenizer.json (the recipe model's)")
    if args.tokenizer is not None and args.max_tokens is None and not args.token_stats:
        raise LlfError("--max-tokens and --tokenizer go together (or --token-stats)", key="--max-tokens",
                       fix="add --max-tokens N or --token-stats")
    if (args.val_ratio is None) != (args.val_out is None):
        raise LlfError("--val-ratio and --val-out go together", key="--val-ratio",
                       fix="--val-ratio 0.02 --val-out val.jsonl")
    if args.val_ratio is not None and not 0 < args.val_ratio < 1:
        raise LlfError(f"--val-ratio must be between 0 and 1, not {args.val_ratio}", key="--val-ratio")
    if args.group_by and args.val_ratio is None:
        raise LlfError("--group-by chooses how rows split: it needs --val-ratio and --val-out", key="--group-by")
    if args.threshold is not None and not args.near_dedup:
        raise LlfError("--threshold is the similarity of --near-dedup", key="--threshold", fix="add --near-dedup")
    threshold = 0.8 if args.threshold is None else args.threshold
    if not 0 < threshold <= 1:
        raise LlfError(f"--threshold must be above 0 and at most 1, not {threshold}", key="--threshold")
    opts = CleanOptions(
        input=Path(args.input), output=Path(args.output), fields=_names(args.fields, "--fields"),
        rename=_renames(args.rename), drop_empty=args.drop_empty, max_chars=_positive(args.max_chars, "--max-chars"),
        max_tokens=_positive(args.max_tokens, "--max-tokens"), token_stats=args.token_stats, tokenizer=Path(args.tokenizer) if args.tokenizer else None,
        dedup=args.dedup, dedup_on=_names(args.dedup_on, "--dedup-on"),
        near_dedup=threshold if args.near_dedup else None, sample=_positive(args.sample, "--sample"), seed=args.seed, val_ratio=args.val_ratio,
        val_out=Path(args.val_out) if args.val_out else None, group_by=args.group_by, skip_bad=args.skip_bad,
        stats=args.stats, progress=sys.stderr.isatty(),
    )
    from llf_recipes import paths

    paths.output_file(opts.output)
    if opts.val_out:
        paths.output_file(opts.val_out, "--val-out")
    outputs = [opts.output] + ([opts.val_out] if opts.val_out else []) + ([opts.rejects] if opts.skip_bad else [])
    resolved = [p.resolve() for p in outputs]
    if opts.input.resolve() in resolved:
        raise LlfError("an output would replace the input", key="-o", fix="write the cleaned rows to another file")
    if len(set(resolved)) < len(resolved):
        raise LlfError(f"two outputs are the same file: {', '.join(map(str, outputs))}", key="--val-out")
    return opts


def main(args) -> int:
    from llf_recipes.data.clean import clean

    opts = options_from(args)
    from llf_recipes.paths import input_file, settle

    settle([opts.output, opts.val_out, opts.rejects])  # first: whatever else goes wrong, the outputs are whole
    input_file(opts.input)
    stale_rejects = not opts.skip_bad and opts.rejects.exists()
    stats = clean(opts)
    if stale_rejects:
        print(f"note: removed {opts.rejects}, left by an earlier --skip-bad run", file=sys.stderr)
    split = f" + {stats.val_written} in {opts.val_out}" if opts.val_out else ""
    if stats.read is None:
        print(f"{opts.output}: {stats.written} rows{split} sampled from {stats.lines} {stats.numbered}s ({stats.parsed} "
              "parsed, the others could not be picked; --stats checks every line)")
    else:
        dropped = sum(stats.dropped.values())
        blank = stats.lines - stats.read
        blank = f", {blank} blank line(s) of {stats.lines}" if blank > 0 else ""
        print(f"{opts.output}: {stats.written} rows{split} ({stats.read} read, {dropped} dropped, "
              f"{stats.rejected} rejected{blank})")
    _empty_note(opts, stats)
    near = stats.near
    if near is not None:
        print(f"near-duplicates: {near.removed} row(s) dropped in {len(near.clusters)} cluster(s)"
              + ("; e.g. " if near.examples else "")
              + ", ".join(f"{stats.numbered} {drop} ~ {stats.numbered} {kept} ({sim:.2f})"
                          for drop, kept, sim in near.examples[:3]))
    if opts.skip_bad:
        print(f"{opts.rejects}: {stats.rejected} bad line(s) set aside")
    if args.stats:
        print_stats(stats)
    if stats.tokens is not None:
        print_token_stats(stats.tokens, args.cutoff)
    return 0


def _empty_note(opts, stats) -> None:
    """--drop-empty without --fields drops a row when any string field is empty: say which fields did it (alpaca's
    `input` is empty in most rows by design)."""
    dropped = stats.dropped.get("empty", 0)
    if not (opts.drop_empty and not opts.fields and stats.empty_fields and (dropped or stats.read is None)):
        return
    fields = ", ".join(f"{name!r} ({n})" for name, n in stats.empty_fields.most_common(5))
    count = f"dropped {dropped} row(s)" if stats.read is not None else "dropped rows"
    print(f"warning: --drop-empty without --fields {count} in which any string field is empty; among the first "
          f"{stats.first_rows} rows the empty fields were {fields}", file=sys.stderr)
    print("  fix: name the fields that must hold text, e.g. --fields instruction,output (alpaca's input is often "
          "empty by design)", file=sys.stderr)


def token_summary(tokens, cutoff: int) -> dict:
    """Nearest-rank percentiles of the tokens per row, and the rows at or over the cutoff (LLaMA-Factory cuts them)."""
    ordered = sorted(tokens)
    n = len(ordered)
    if not n:
        return {"rows": 0, "total": 0, "over": 0}

    def pick(q: int) -> int:
        return ordered[max(0, -(-q * n // 100) - 1)]  # the ceil(q n / 100)-th smallest

    over = n - next((i for i, t in enumerate(ordered) if t >= cutoff), n)
    return {"rows": n, "total": sum(ordered), "min": ordered[0], "p50": pick(50), "p90": pick(90), "p99": pick(99),
            "max": ordered[-1], "over": over}


def print_token_stats(tokens, cutoff: int) -> None:
    s = token_summary(tokens, cutoff)
    if not s["rows"]:
        print("tokens/row     no rows written")
        return
    print(f"{'tokens/row':<14} min {s['min']}  p50 {s['p50']}  p90 {s['p90']}  p99 {s['p99']}  max {s['max']}  "
          f"(total {s['total']})")
    print(f"{'over cutoff':<14} {s['over']} row(s) with {cutoff} or more tokens ({s['over'] / s['rows']:.1%})")


def print_stats(stats) -> None:
    rows = [("read", stats.read), ("rejected", stats.rejected), ("dropped", sum(stats.dropped.values()))]
    rows += [(f"  {reason}", stats.dropped[reason]) for reason in DROP_REASONS if reason in stats.dropped]
    rows += [("written", stats.written + stats.val_written)]
    if stats.val_written:
        rows += [("  train", stats.written), ("  validation", stats.val_written)]
    width = max(len(str(n)) for _, n in rows)
    for label, n in rows:
        print(f"{label:<14} {n:>{width}}")
    if stats.written + stats.val_written:
        print(f"{'chars/row':<14} min {stats.chars_min}  mean {stats.chars_mean:.1f}  max {stats.chars_max}")

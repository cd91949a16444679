"""`llf-recipes report`: one self-contained HTML page comparing runs (curves, their reading, metrics, samples)."""

from __future__ import annotations

from pathlib import Path

from llf_recipes.cli.common import add_verb
from llf_recipes.errors import LlfError


def add_parser(sub) -> None:
    p = add_verb(sub, "report", "write one self-contained HTML report of runs: curves, metrics, samples side by side", """
        llf-recipes report saves/                          # -> saves/report.html (reads saves/evaluation_results.json)
        llf-recipes report saves/zhihu -o zhihu.html --png charts/   # also each chart as a PNG
        llf-recipes eval saves/zhihu && llf-recipes report saves/zhihu
    """)
    p.add_argument("paths", nargs="+", metavar="RUNS_DIR|RUN_DIR",
                   help="run directories (they hold llf-run.json) or directories holding runs at any depth")
    p.add_argument("-o", "--output", metavar="FILE", help="the HTML file (default: RUNS_DIR/report.html)")
    p.add_argument("--results", metavar="FILE",
                   help="evaluation results from `eval` (default: RUNS_DIR/evaluation_results.json when present)")
    p.add_argument("--png", metavar="DIR", help="also write every chart as DIR/<chart>.png")
    p.add_argument("--title", help="page title")
    p.set_defaults(func=main)


def main(args) -> int:
    try:
        import jinja2  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError:
        raise LlfError("the report needs matplotlib", fix='pip install "llf-recipes[report]"') from None
    from llf_recipes.report import build

    first = Path(args.paths[0])
    output = Path(args.output) if args.output else (first if first.is_dir() else first.parent) / "report.html"
    if args.results and not Path(args.results).is_file():
        raise LlfError(f"{args.results} does not exist", key="--results", fix="run llf-recipes eval first, or drop --results")
    page, pngs = build(args.paths, output, results=args.results, title=args.title, png_dir=args.png)
    print(f"report: {page}")
    for png in pngs:
        print(f"chart: {png}")
    return 0

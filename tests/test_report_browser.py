"""The report in a real browser: headless Chromium (Debian's package) driven by Playwright.

The page must load with no console error and no request but its own file, and the charts must be drawn: in a
screenshot of each chart, enough pixels are dark, and pixels of each run's colour are there (the curves).
"""

from pathlib import Path

import evalruns
import pytest
from conftest import run_cli_subprocess
from evalruns import ENV

zhihu_runs, evaluated = evalruns.zhihu_runs, evalruns.evaluated  # session fixtures (see evalruns.py)
standin_grpo_run = evalruns.standin_grpo_run

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
    if not CHROMIUM.is_file():
        pytest.skip("needs Debian's chromium package (apt-get install -y chromium; .ci/run installs it)")
    pytest.importorskip("matplotlib", reason="needs the report extra (matplotlib)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield instance
        instance.close()


def rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def test_report_loads_offline_and_draws_its_charts(browser, evaluated, zhihu_runs, tmp_path):
    from PIL import Image

    from llf_recipes.report import collect

    page_path = tmp_path / "report.html"
    proc = run_cli_subprocess("report", zhihu_runs, "-o", page_path, env=ENV)
    assert proc.returncode == 0, proc.stderr
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console, errors, requests, failed = [], [], [], []
    page.on("console", lambda m: console.append((m.type, m.text)))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(page_path.as_uri(), wait_until="load")
    page.wait_for_load_state("networkidle")

    assert [m for m in console if m[0] in ("error", "warning")] == [] and errors == []
    assert requests == [page_path.as_uri()] and failed == []  # the page itself, nothing else

    full = tmp_path / "report.png"
    page.screenshot(path=str(full), full_page=True)
    charts = page.locator("figure.chart")
    assert charts.count() == 3
    colors = {view.name: rgb(view.color) for view in collect([zhihu_runs])[0]}  # each run's colour in every chart
    run_colors = list(colors.values())
    for i in range(charts.count()):
        chart = charts.nth(i)
        box = chart.bounding_box()
        assert box["width"] > 600 and box["height"] > 150
        shot = tmp_path / f"chart{i}.png"
        chart.screenshot(path=str(shot))
        pixels = list(Image.open(shot).convert("RGB").getdata())
        drawn = sum(1 for p in pixels if min(p) < 235)
        assert drawn > 0.02 * len(pixels), f"chart {i} looks blank: {drawn} of {len(pixels)} pixels drawn"
        near = [sum(1 for p in pixels if all(abs(a - b) < 40 for a, b in zip(p, color))) for color in run_colors]
        assert max(near) > 200, f"chart {i}: no curve in a run's colour ({near})"
    loss_shot = list(Image.open(tmp_path / "chart0.png").convert("RGB").getdata())
    for name in ("zhihu/sft", "zhihu/dpo"):  # both trained runs have a loss curve in the first chart
        assert sum(1 for p in loss_shot if all(abs(a - b) < 40 for a, b in zip(p, colors[name]))) > 200, name


def test_grpo_reward_chart_is_drawn_in_the_browser(browser, standin_grpo_run, tmp_path):
    from PIL import Image

    from llf_recipes.report import collect

    page_path = tmp_path / "grpo.html"
    proc = run_cli_subprocess("report", standin_grpo_run, "-o", page_path, env=ENV)
    assert proc.returncode == 0, proc.stderr
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_path.as_uri(), wait_until="load")
    chart = page.locator('figure.chart[data-chart="grpo"]')
    assert chart.count() == 1 and errors == []
    shot = tmp_path / "grpo.png"
    chart.screenshot(path=str(shot))
    pixels = list(Image.open(shot).convert("RGB").getdata())
    assert sum(1 for p in pixels if min(p) < 235) > 0.02 * len(pixels), "the reward chart looks blank"
    color = rgb(collect([standin_grpo_run])[0][0].color)
    assert sum(1 for p in pixels if all(abs(a - b) < 40 for a, b in zip(p, color))) > 200  # the run's curves

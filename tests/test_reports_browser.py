"""Every report opens in headless Chromium without console errors, with every figure visible and non-empty.

Debian's ``chromium`` is driven by playwright through ``executable_path`` (never ``playwright install``); the
tests skip where either is absent. Screenshots go to ``tmp_path`` and, when ``DESCEND_ARTIFACTS`` is set, are
copied there as test artifacts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from descend import lab
from descend.cli import main

CHROMIUM = os.environ.get("DESCEND_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
RECIPE = """
name = "iris-report"
seed = 0
[data]
name = "iris"
[model]
name = "mlp"
hidden = [8]
[train]
epochs = 3
batch_size = 16
device = "cpu"
clip_grad_norm = 5.0
[optimizer]
name = "adam"
lr = 0.05
[schedule]
name = "cosine"
"""
SINE = """
name = "sine-report"
[data]
name = "sine"
[model]
name = "mlp"
hidden = [16]
[train]
epochs = 3
batch_size = "full"
device = "cpu"
[optimizer]
name = "adam"
lr = 0.01
"""


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def check_page(browser, report: Path, shot: Path) -> int:
    """Open ``report``; no console errors or failed requests, every figure visible with a non-zero size;
    saves a full-page screenshot. Returns the number of figures."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(report.resolve().as_uri())
    page.wait_for_load_state("load")
    figures = page.locator("img, svg")
    count = figures.count()
    assert count > 0, f"{report} has no figure"
    for i in range(count):
        figure = figures.nth(i)
        figure.scroll_into_view_if_needed()
        assert figure.is_visible(), f"figure {i} of {report} is not visible"
        box = figure.bounding_box()
        assert box and box["width"] > 10 and box["height"] > 10, f"figure {i} of {report} is empty: {box}"
        assert figure.evaluate("e => e.tagName !== 'IMG' || (e.complete && e.naturalWidth > 0)"), \
            f"figure {i} of {report} did not decode"
    assert not errors, errors
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    artifacts = os.environ.get("DESCEND_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)
    return count


@pytest.mark.parametrize("recipe", [RECIPE, SINE], ids=["classification", "regression"])
def test_run_report(browser, tmp_path, recipe):
    path = tmp_path / "r.toml"
    path.write_text(recipe)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert main(["report", str(out)]) == 0                                  # rewriting it works too
    text = (out / "report.html").read_text()
    assert "http://" not in text and "https://" not in text                # self-contained
    title = "Confusion matrix" if recipe is RECIPE else "Predicted vs true"
    assert title in text and "Resolved recipe" in text
    assert check_page(browser, out / "report.html", tmp_path / f"run-{out.parent.name}.png") >= 3


def test_run_report_curves_use_the_logged_epoch_numbers():
    from descend.report.run import column

    rows = [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.0, "lr": 0.1}]
    assert column(rows, "train_loss")[0].tolist() == [1, 2] and column(rows, "lr")[0].tolist() == [2]


def test_compare_report(browser, tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(SINE)
    out = tmp_path / "cmp"
    assert main(["compare", str(path), "--vary", "optimizer.lr=0.01,1e6", "--set", "optimizer.name=gd", "--seeds", "2",
                 "--out", str(out)]) == 0
    assert "diverged" in (out / "compare.html").read_text()                # reported, not fatal
    assert check_page(browser, out / "compare.html", tmp_path / "compare.png") == 2


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in ("schedules", "search") else pytest.mark.slow)
                                  for n in lab.names()])
def test_lab_report(browser, tmp_path, name):
    report = lab.run(name, quick=True, out=tmp_path).write(tmp_path)
    assert check_page(browser, report, tmp_path / f"lab-{name}.png") >= 1


def test_ensemble_report(browser, tmp_path):
    """An ensemble directory gets its report.html when trained, and from `descend report` again."""
    path = tmp_path / "r.toml"
    path.write_text(RECIPE)
    out = tmp_path / "ens"
    assert main(["ensemble", str(path), "--members", "2", "--out", str(out), "--quiet"]) == 0
    text = (out / "report.html").read_text()
    assert "Ensemble metrics" in text and "Members" in text and "Resolved recipe" in text
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert check_page(browser, out / "report.html", tmp_path / "ensemble.png") == 1

"""`dvc plots show` as a user runs it, opened in Debian's Chromium with the network cut: both
curves render from the inlined Vega, with their axis titles, and no request leaves the file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from custseg.pipeline.plots_page import BUNDLES, PLACEHOLDERS, TEMPLATE, offline_template
from custseg.testing.sandbox import copy_project
from tests.fixtures.app import ARTIFACTS
from tests.fixtures.project import ROOT

NODE_MODULES = ROOT / "vendor/vega/node_modules"


def test_the_template_inlines_every_bundle_and_keeps_dvcs_placeholders() -> None:
    page = offline_template(NODE_MODULES)
    for bundle in BUNDLES:
        code = (NODE_MODULES / bundle).read_text()
        assert code[:2000].replace("</script", "<\\/script") in page
    assert "{plot_divs}" in page and "{refresh_tag}" in page
    assert "{scripts}" not in page, "DVC would put its CDN script tags there"
    assert "<script src" not in page
    assert all(marker in PLACEHOLDERS for marker in ("{plot_divs}", "{scripts}"))


def test_a_missing_bundle_says_how_to_get_it(tmp_path: Path) -> None:
    from custseg.errors import UserError

    with pytest.raises(UserError, match=r"vega.min.js: not found; run `make install`"):
        offline_template(tmp_path)


@pytest.mark.browser
def test_dvc_plots_show_renders_both_curves_offline(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from custseg.testing.browser import CHROMIUM, CHROMIUM_ARGS
    from tests.fixtures.app import require_chromium

    require_chromium()
    template = ROOT / TEMPLATE
    assert template.is_file(), f"{template} missing: run `make install`"
    project = copy_project(ROOT, tmp_path / "p")
    for name in ("plots/k_sweep.csv", str(TEMPLATE)):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, project / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    done = subprocess.run(
        ["dvc", "plots", "show"], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    index = project / "dvc_plots/index.html"

    outside: list[str] = []

    def only_the_file(route) -> None:
        url = route.request.url
        if url.startswith("file://") or url.startswith("data:"):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_the_file)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(index.as_uri())
            page.wait_for_function(
                "() => document.querySelectorAll('svg.marks').length === 2", timeout=30_000
            )
            titles = page.locator("svg.marks text").all_text_contents()
            # Per plot, the longest line path: the curve through every k (9 points, 8 segments).
            segments = page.evaluate(
                """() => [...document.querySelectorAll('svg.marks')].map(svg => Math.max(0,
                    ...[...svg.querySelectorAll("path[aria-roledescription='line mark']")]
                    .map(p => (p.getAttribute('d').match(/L/g) || []).length)))"""
            )
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dvc-plots-offline.png"), full_page=True)
        finally:
            browser.close()
    assert not outside, f"the page tried to load {outside}"
    assert not errors, errors
    k_values = len((ROOT / "plots/k_sweep.csv").read_text().splitlines()) - 1
    assert segments == [k_values - 1] * 2, f"each plot draws its curve through every k: {segments}"
    shown = " ".join(titles)
    for text in (
        "inertia (within-segment sum of squares)",
        "silhouette (-1 to 1)",
        "k (number of segments)",
        "Elbow - inertia over k",
        "Silhouette over k",
    ):
        assert text in shown, (text, titles)

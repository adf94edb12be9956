"""The rendered book in headless Chromium (run by .ci/run after `make book`; needs Debian's chromium).

Deselected from `make test` (marker `rendered`): it checks the HTML that the book build produced.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.rendered

HTML = Path(os.environ.get("ANATCL_BOOK_HTML", Path(__file__).resolve().parent.parent / "_build" / "html"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGES_WITHOUT_FIGURES = ("book/intro.html", "book/api.html")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium(tmp_path, *args):
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is required (apt-get install chromium); .ci/run installs it")
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                            capture_output=True, text=True, timeout=120)
    return result.stdout


@pytest.mark.parametrize("page, must_contain", [
    ("book/intro.html", ["AnatCL, reproduced", "Barbano"]),
    ("book/05_brain_age_sex.html", ["Brain age and sex", "Our table beside the paper", "openbhb/age"]),
    ("book/api.html", ["API reference", 'id="anatcl_core.methods.get_method"',
                       'id="anatcl_core.probe.cross_validate_probe"', 'id="anatcl_core.embed.embed_volumes"']),
])
def test_pages_render_with_content_and_no_errors(tmp_path, page, must_contain):
    path = HTML / page
    assert path.exists(), f"{path} missing: run `make book` first"
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", path.as_uri())
    for text in must_contain:
        assert text in dom, f"{page}: rendered DOM lacks {text!r}"
    assert "Traceback (most recent call last)" not in dom
    assert not re.search(r"\{\{\s*\w+\s*\}\}", dom), f"{page}: an unfilled {{substitution}} is rendered"
    assert "output stderr" not in dom and "output traceback" not in dom   # MyST-NB's classes for errors
    if page not in PAGES_WITHOUT_FIGURES:
        assert dom.count("<img") >= 1, f"{page}: no figure rendered"
    shots = HTML.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    shot = shots / (Path(page).stem + ".png")
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", path.as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000


@pytest.mark.parametrize("function, parameters", [
    ("anatcl_core.probe.cross_validate_probe", ["X", "y", "kind", "groups", "n_splits", "seed", "n_repeats", "grid",
                                                "inner_splits", "small_class_repeats", "min_per_test_fold", "n_jobs"]),
    ("anatcl_core.embed.embed_volumes", ["model", "volumes", "batch_size", "device", "amp", "channels_last", "crop",
                                         "compile", "progress", "ids"]),
])
def test_api_page_renders_google_style_args_as_parameter_lists(tmp_path, function, parameters):
    path = HTML / "book" / "api.html"
    assert path.exists(), f"{path} missing: run `make book` first"
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", path.as_uri())
    start = dom.find(f'id="{function}"')
    assert start >= 0, f"api.html does not document {function}"
    end = dom.find('<dt class="sig sig-object py"', start + 1)     # the next documented object
    entry = dom[start:end if end >= 0 else len(dom)]
    # napoleon turns `Args:` into Sphinx's field list: "Parameters:", then one <strong>name</strong> per argument
    listed = re.search(r'<dt class="field-\w+">Parameters<.*?</dt>\s*<dd[^>]*>(.*?)</dd>', entry, re.S)
    assert listed, f"{function}: no parameter list rendered"
    rendered = re.findall(r"<li><p><strong>(\w+)</strong>", listed.group(1))
    assert rendered == parameters, f"{function}: parameter list {rendered}"
    assert re.search(r'<dt class="field-\w+">Returns', entry), f"{function}: no Returns section rendered"
    assert "Args:" not in entry, f"{function}: the Args section is shown as text, not parsed"


def test_the_build_recorded_how_long_each_chapter_took():
    import pandas as pd

    from anatcl_core.book import REPO, chapter_order, is_notebook_source

    timings = pd.read_csv(HTML.parent / "timings.csv")
    chapters = [e for e in chapter_order(REPO / "_toc.yml") if is_notebook_source(REPO / f"{e}.md")]
    assert list(timings["step"]) == ["synthetic data", *chapters, "jupyter-book build"]
    assert (timings["seconds"] >= 0).all() and timings["seconds"].sum() > 0
    assert (timings["status"] == "ok").all()

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


@pytest.mark.parametrize("function", ["anatcl_core.probe.cross_validate_probe", "anatcl_core.embed.embed_volumes"])
def test_api_page_renders_google_style_args_as_parameter_lists(tmp_path, function):
    import importlib
    import inspect
    module, name = function.rsplit(".", 1)
    parameters = list(inspect.signature(getattr(importlib.import_module(module), name)).parameters)
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


# Injected into a copy of each page: after layout, record every table wider than the text column and every
# table whose own box overflows its parent, as a JSON attribute that --dump-dom then shows.
_MEASURE = """<script>
window.addEventListener('load', () => {
  const main = document.querySelector('main') || document.body;
  const column = main.getBoundingClientRect().width;
  const wide = [];
  document.querySelectorAll('table').forEach((t, i) => {
    const box = t.getBoundingClientRect().width, parent = t.parentElement.getBoundingClientRect().width;
    if (box > parent + 1 || box > column + 1) wide.push([i, Math.round(box), Math.round(parent)]);
  });
  document.body.setAttribute('data-wide-tables', JSON.stringify(wide));
});
</script>"""


def _chapter_pages():
    """Every chapter of the toc, whether or not the build produced its page: a missing page fails, not vanishes."""
    from anatcl_core.book import REPO, chapter_order, is_notebook_source
    return [Path(e).name + ".html" for e in chapter_order(REPO / "_toc.yml") if is_notebook_source(REPO / f"{e}.md")]


def _chromium_with_script(tmp_path, page, script, *args):
    """Run Chromium on a copy of `page` with `script` injected before </body>; the copy sits beside the page, so
    its CSS and images resolve, and is removed afterwards. Returns what Chromium printed (e.g. --dump-dom)."""
    source = HTML / "book" / page
    assert source.exists(), f"{source} missing: run `make book` first"
    probe = source.with_name(f".probe-{page}")
    probe.write_text(source.read_text().replace("</body>", script + "</body>"))
    try:
        return _chromium(tmp_path, *args, probe.as_uri())
    finally:
        probe.unlink()


def _measured(tmp_path, page, script, attribute):
    """The JSON list a measuring `script` left in the body's `attribute`, after layout at a desktop window."""
    import json
    dom = _chromium_with_script(tmp_path, page, script, "--window-size=1280,1600", "--virtual-time-budget=8000",
                                "--dump-dom")
    found = re.search(attribute + r"=\"([^\"]*)\"", dom)
    assert found, f"{page}: the layout was not measured"
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.mark.parametrize("page", _chapter_pages())
def test_no_table_is_wider_than_the_text_column(tmp_path, page):
    wide = _measured(tmp_path, page, _MEASURE, "data-wide-tables")
    assert wide == [], f"{page}: tables (index, width px, container px) wider than their column: {wide}"


@pytest.mark.parametrize("page", _chapter_pages())
def test_pages_show_no_build_paths_and_no_nan(page):
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.parts, self.skip = [], 0

        def handle_starttag(self, tag, attrs):
            self.skip += tag in ("script", "style")

        def handle_endtag(self, tag):
            self.skip -= tag in ("script", "style") and self.skip > 0

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed((HTML / "book" / page).read_text())
    text = " ".join(parser.parts)
    build = str(HTML.parent.resolve())
    assert build not in text, f"{page}: shows the build folder {build}"
    assert not re.search(r"(?<![\w.])nan(?![\w(])", text), f"{page}: a literal 'nan' is shown: " + \
        text[max(0, re.search(r'(?<![\w.])nan(?![\w(])', text).start() - 80):][:160]


def test_equations_are_typeset_from_the_books_own_mathjax(tmp_path):
    """Chromium runs here without network, so typeset equations prove MathJax came with the book."""
    page = HTML / "book" / "03_objectives.html"
    source = page.read_text()
    assert "_static/mathjax/tex-mml-chtml.js" in source and "cdn.jsdelivr.net/npm/mathjax" not in source
    dom = _chromium(tmp_path, "--virtual-time-budget=15000", "--dump-dom", page.as_uri())
    assert dom.count("<mjx-container") >= 5, "equations were not typeset"


# Injected like _MEASURE: every figure image of the page drawn at less than half its own size.
_FIGURES = """<script>
window.addEventListener('load', () => {
  const small = [];
  document.querySelectorAll('main img').forEach((img, i) => {
    const shown = img.getBoundingClientRect().width;
    if (img.naturalWidth > 0 && shown < 0.5 * img.naturalWidth) small.push([i, img.naturalWidth, Math.round(shown)]);
  });
  document.body.setAttribute('data-small-figures', JSON.stringify(small));
});
</script>"""


@pytest.mark.parametrize("page", _chapter_pages())
def test_no_figure_is_shrunk_below_half_its_size(tmp_path, page):
    """A figure drawn at under half its size has tick labels of a few pixels: at most three panels a row
    (`figure_layout.panel_grid`) keeps every figure above that at the page width."""
    small = _measured(tmp_path, page, _FIGURES, "data-small-figures")
    assert small == [], f"{page}: figures (index, natural px, shown px) drawn at under half their size: {small}"


def _main(page):
    from bs4 import BeautifulSoup
    path = HTML / "book" / page
    assert path.exists(), f"{path} missing: run `make book` first"
    return BeautifulSoup(path.read_text(), "html.parser").find("main")


def _table(main, caption_start):
    """The rendered table whose caption starts with `caption_start` -> (header rows, {row name: [cells]})."""
    for table in main.find_all("table"):
        caption = table.find("caption")
        if caption is not None and caption.get_text(" ", strip=True).startswith(caption_start):
            header = [[c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"])] for tr in table.thead.find_all("tr")]
            body = {}
            for tr in table.tbody.find_all("tr"):
                cells = [c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"])]
                body[cells[0]] = cells[1:]
            return header, body
    raise AssertionError(f"no table captioned {caption_start!r}")


def _close(prose: str, cell: str) -> bool:
    """A number of the prose (1 decimal) is the table's (2 decimals) rounded: within half a unit of its digit."""
    return abs(float(prose) - float(cell)) <= 0.05 + 0.005 + 1e-9


def test_chapter_4_prose_states_the_numbers_of_its_own_age_table():
    main = _main("04_pretraining.html")
    header, rows = _table(main, "Age from frozen OpenBHB features")
    column = {name: k for k, name in enumerate(header[0][1:])}
    prose = next(p.get_text(" ", strip=True) for p in main.find_all("p") if "beat always answering" in p.get_text())
    median = re.search(r"training median \((\d+\.\d) years\)", prose)
    assert median and _close(median.group(1), rows["training median"][column["mae"]])
    compared = re.findall(r"([\w\- ]+?) \(([+-]\d+\.\d), ([+-]\d+\.\d) to ([+-]\d+\.\d)\)", prose)
    assert len(compared) >= 5, prose           # every trained encoder but the reference, and the untrained one
    for name, difference, low, high in compared:
        name = name.strip(" ,:")
        assert name in rows, f"prose names {name!r}, not a row of the table"
        for value, key in [(difference, "minus_reference"), (low, "paired_low"), (high, "paired_high")]:
            assert _close(value, rows[name][column[key]]), f"{name}: prose {key} {value}, table {rows[name][column[key]]}"


def test_a_table_chapters_best_method_lines_state_its_own_table():
    """Chapter 6: each 'best here M (x)' line is the highest of the trained methods' cells of that task, and
    'best in the paper' is the paper's column. Task k of the bullets is the k-th (paper, ours, Δ) column triple."""
    from anatcl_core.methods import BASELINES
    main = _main("06_alzheimers.html")
    header, rows = _table(main, "The paper's Table 3")
    lines = list(dict.fromkeys(li.get_text(" ", strip=True) for li in main.find_all("li")
                               if "best here" in li.get_text()))
    assert len(lines) == 3, lines
    trained = [m for m in rows if m not in BASELINES.values() and not m.endswith("(released)")]
    for k, line in enumerate(lines):
        found = re.search(r"best here (.+?) \((\d+\.\d\d)\); best in the paper (.+?) \((\d+\.\d\d)\)", line)
        assert found, line
        ours = {m: rows[m][3 * k + 1].split(" ± ")[0] for m in trained}
        assert ours[found.group(1)] == found.group(2), (line, ours)
        assert float(found.group(2)) == max(float(v) for v in ours.values() if v not in ("", "—", "nan"))
        assert rows[found.group(3)][3 * k].split(" ± ")[0] == found.group(4), line


@pytest.mark.parametrize("page", _chapter_pages())
def test_every_chapter_links_to_another_chapter_in_its_text(page):
    """Links in the chapter's own text, not the sidebar or the previous/next buttons; the references page and
    links within the page do not count."""
    chapters = set(_chapter_pages())
    article = _main(page).find("article")
    for footer in article.find_all(class_="prev-next-area"):
        footer.decompose()
    targets = {a["href"].split("#")[0] for a in article.find_all("a", href=True)}
    assert targets & (chapters - {page}), f"{page}: links only to {sorted(t for t in targets if t)}"


#: The sections a reader's review of 2026-12-02 found wanting; .ci/run puts the screenshots of that build
#: (.ci/screenshots-before/) beside these, as before-<chapter>.png and after-<chapter>.png.
REVIEWED = {"04_pretraining.html": "did-the-encoders-learn-and-do-they-differ",
            "05_brain_age_sex.html": "our-table-beside-the-paper-s",
            "07_schizophrenia_autism.html": "our-table-beside-the-paper-s",
            "08_clinical_scores.html": "our-table-beside-the-paper-s"}


# Injected like _MEASURE: the chapter's title, then the reviewed section at the top of the window (scrolling
# to an anchor is not reliable in a headless screenshot).
_FROM_SECTION = """<script>
window.addEventListener('load', () => {
  const section = document.getElementById('%s');
  let before = section.previousElementSibling;
  while (before) { const next = before.previousElementSibling; if (before.tagName !== 'H1') before.remove(); before = next; }
});
</script>"""


@pytest.mark.parametrize("page, section", REVIEWED.items())
def test_after_screenshots_of_the_reviewed_chapters(tmp_path, page, section):
    assert f'id="{section}"' in (HTML / "book" / page).read_text(), f"{page}: no section {section}"
    shot = HTML.parent / "screenshots" / f"after-{Path(page).stem}.png"
    shot.parent.mkdir(exist_ok=True)
    _chromium_with_script(tmp_path, page, _FROM_SECTION % section, f"--screenshot={shot}", "--window-size=1280,2400",
                          "--hide-scrollbars", "--virtual-time-budget=5000")
    assert shot.exists() and shot.stat().st_size > 10_000

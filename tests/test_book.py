"""The book's sources: MyST notebooks without outputs and with parameters, a consistent table of contents and
parameter files, a build that names the failing chapter and cell, and the "Reproduce at scale" batch run as
written."""
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from anatcl_core.book import (ChapterFailed, chapter_order, chapter_parameters, execute_chapter, is_notebook_source,
                              load_params, notebook_from_source)

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (REPO / "book").glob("*.md") if is_notebook_source(p))


def test_there_is_a_chapter_for_every_experiment():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_data", "02_features", "03_objectives", "04_pretraining", "05_brain_age_sex",
                     "06_alzheimers", "07_schizophrenia_autism", "08_clinical_scores", "09_summary", "10_own_data",
                     "11_anatomy"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs_and_have_parameters(path):
    nb = jupytext.read(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters'"
    source = "".join(tagged[0]["source"])
    for name in ("data_source", "data_root", "output_dir", "resolution", "n_subjects", "seed"):
        assert re.search(rf"^{name} = ", source, re.M), f"{path.name}: parameter {name} missing"
    assert nb["cells"][0]["cell_type"] == "markdown" and "".join(nb["cells"][0]["source"]).startswith("# ")
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_build_turns_each_chapter_into_the_same_cells(path, tmp_path):
    notebook = nbformat.read(notebook_from_source(path, tmp_path / f"{path.stem}.ipynb"), as_version=4)
    again = jupytext.read(path)
    assert [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in notebook.cells] == \
        [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in again.cells]
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_code_has_no_undefined_names_or_unused_imports(path):
    """A renamed library function breaks a chapter here, in seconds, instead of in the 15-minute build."""
    from pyflakes.api import check
    from pyflakes.reporter import Reporter


    script = jupytext.writes(jupytext.read(path), fmt="py:percent")
    found = io.StringIO()
    check(script, path.name, Reporter(found, found))
    assert not found.getvalue(), found.getvalue()


def test_only_chapters_count_as_notebooks_plain_pages_do_not():
    assert not is_notebook_source(REPO / "book" / "intro.md")
    assert not is_notebook_source(REPO / "book" / "reproduce.md")
    assert not is_notebook_source(REPO / "README.md")


def test_toc_lists_every_chapter_and_params_name_real_chapters():
    order = chapter_order(REPO / "_toc.yml")
    assert order[0] == "book/intro"
    for entry in order:
        assert (REPO / f"{entry}.md").exists(), entry
    assert {f"book/{p.stem}" for p in NOTEBOOKS} <= set(order)
    for params_file in (REPO / "book" / "params").glob("*.yaml"):
        params = load_params(params_file)
        for chapter, overrides in params.get("chapters", {}).items():
            nb = jupytext.read(REPO / "book" / f"{chapter}.md")
            source = "".join(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
            for name in overrides:
                assert re.search(rf"^{name} = ", source, re.M), f"{params_file.name}: {chapter} has no {name}"


def test_bad_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_params(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("common: [1, 2]\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*'common' mapping"):
        load_params(tmp_path / "bad.yaml")


def test_executed_chapter_gets_its_parameters_injected_and_collapsed(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("print(x * 10)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "01_ok.ipynb"
    nbformat.write(nb, path)
    execute_chapter(path, {"x": 4}, cwd=tmp_path)
    executed = nbformat.read(path, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "x = 4" in injected[0].source
    assert all("hide-input" in c.metadata["tags"] for c in executed.cells[:2])
    assert executed.cells[-1].outputs[0]["text"].strip() == "40"


def test_a_failing_cell_names_the_chapter_and_the_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("y = x + 1"),
        nbformat.v4.new_code_cell("raise ValueError('the synthetic cohort is missing')"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "07_broken.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(ChapterFailed, match=r"07_broken\.ipynb: cell \d+ raised ValueError: the synthetic cohort"):
        execute_chapter(path, {"x": 2}, cwd=tmp_path)


@pytest.mark.slow
def test_the_reproduce_at_scale_batch_runs_as_written(tmp_path):
    page = (REPO / "book" / "reproduce.md").read_text()
    block = re.search(r"## A batch from the command line.*?```bash\n(.*?)```", page, re.S).group(1)
    env = {**os.environ, "OUT": str(tmp_path / "batch")}
    subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=REPO, env=env, check=True)
    for method in ("simclr", "anatcl-local"):
        assert (tmp_path / "batch" / "runs" / f"{method}-fold0" / "checkpoint.pth").exists()
    table = (tmp_path / "batch" / "tables" / "table2.csv").read_text()
    assert "openbhb/age" in table and "anatcl-local" in table
    executed = nbformat.read(tmp_path / "batch" / "05_brain_age_sex.ipynb", as_version=4)
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")


def test_build_timings_record_a_failing_step_as_failed(tmp_path):
    from anatcl_core.book import _timed
    log = tmp_path / "timings.csv"
    log.write_text("step,seconds,status\n")
    with _timed(log, "book/01_data"):
        pass
    with pytest.raises(RuntimeError, match="boom"), _timed(log, "book/04_pretraining"):
        raise RuntimeError("boom")
    rows = log.read_text().splitlines()[1:]
    assert [r.split(",")[0::2] for r in rows] == [["book/01_data", "ok"], ["book/04_pretraining", "failed"]]


# The API reference (book/api.md) documents every public module of anatcl_core with autodoc. Public: no part of
# the dotted name starts with "_". The submodules of these packages are covered through their package, whose
# `__all__` is their public API (the page documents the package with :members:, which follows `__all__`):
API_COVERED_BY_PACKAGE = ("anatcl_core.data.importers", "anatcl_core.data.synthetic")


def test_api_page_documents_every_public_module():
    import pkgutil

    import anatcl_core

    page = (REPO / "book" / "api.md").read_text()
    assert not is_notebook_source(REPO / "book" / "api.md")      # a plain page: the build copies it as it is
    assert "book/api" in chapter_order(REPO / "_toc.yml")
    documented = set(re.findall(r"^\.\. automodule:: (\S+)$", page, re.M))
    public = {m.name for m in pkgutil.walk_packages(anatcl_core.__path__, "anatcl_core.")
              if not any(part.startswith("_") for part in m.name.split("."))
              and not m.name.startswith(tuple(f"{p}." for p in API_COVERED_BY_PACKAGE))}
    assert set(API_COVERED_BY_PACKAGE) <= public
    assert sorted(public - documented) == [], "book/api.md lacks an automodule for these modules"
    assert sorted(documented - public) == [], "book/api.md documents modules that are not public or do not exist"


@pytest.mark.slow
def test_a_table_chapter_runs_alone_in_a_fresh_output_folder(tmp_path):
    """The Colab case: chapter 5 with nothing before it makes its data and trains its encoders (CI sizes)."""
    import papermill

    params = {**load_params("ci")["common"], **load_params("ci")["chapters"]["05_brain_age_sex"]}
    params.update(data_root=str(tmp_path / "data"), output_dir=str(tmp_path / "out"), n_subjects=24,
                  methods=["simclr", "anatcl-local"])
    notebook = notebook_from_source(REPO / "book" / "05_brain_age_sex.md", tmp_path / "05.ipynb")
    papermill.execute_notebook(str(notebook), str(tmp_path / "05-run.ipynb"), parameters=params,
                               cwd=str(REPO / "book"), kernel_name="python3", progress_bar=False)
    for method in params["methods"]:
        assert (tmp_path / "out" / "runs" / f"{method}-fold0" / "checkpoint.pth").exists()
    table = (tmp_path / "out" / "tables" / "table2.csv").read_text()
    assert "openbhb/age" in table and "anatcl-local" in table


def test_the_core_imports_without_the_book_extra():
    """A core install (no matplotlib, seaborn, papermill, jupytext, nbformat, IPython) imports every module."""
    script = """
import importlib, pkgutil, sys
for extra in ("matplotlib", "seaborn", "papermill", "jupytext", "nbformat", "IPython", "jupyter_book", "mathjax"):
    sys.modules[extra] = None          # any import of it now raises ImportError
import anatcl_core
names = [m.name for m in pkgutil.walk_packages(anatcl_core.__path__, "anatcl_core.")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) >= 30


@pytest.mark.parametrize("text, message", [
    ("foo: [\n", "not valid YAML"),
    ("common: {data_root: d, output_dir: o, n_subject: 3}\n", r"common\.n_subject: not a parameter of"),
    ("common: {data_root: d, output_dir: o}\nchapters: {04_pretrain: {width: 3}}\n",
     r"chapters\.04_pretrain: no such chapter"),
    ("common: {data_root: d, output_dir: o}\nchapters: {04_pretraining: {widht: 3}}\n",
     r"chapters\.04_pretraining: unknown parameter\(s\) \['widht'\]"),
    ("common: {data_root: d}\n", r"lacks \['output_dir'\]"),
    ("chapters: [x]\ncommon: {data_root: d, output_dir: o}\n", "'chapters' must map chapter names"),
    ("common: {data_root: d, output_dir: o}\nbuild: x\n", r"unknown key\(s\) \['build'\]"),
])
def test_a_params_file_with_a_typo_is_refused_before_any_work(tmp_path, text, message):
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_params(tmp_path / "p.yaml")


def test_the_presets_load_by_name_and_the_build_folder_protects_what_it_did_not_make(tmp_path):
    from anatcl_core.book import claim_build_dir
    assert load_params("ci")["common"]["n_subjects"] == 40
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds source that anatcl book did not make"):
        claim_build_dir(tmp_path)
    assert (tmp_path / "source" / "keep.txt").read_text() == "mine"
    assert claim_build_dir(tmp_path / "fresh") == tmp_path / "fresh"
    (tmp_path / "fresh" / "html").mkdir()
    assert claim_build_dir(tmp_path / "fresh") == tmp_path / "fresh"      # its own earlier build: fine


def test_downloadable_notebooks_lose_the_injected_absolute_paths(tmp_path):
    from anatcl_core.book import drop_injected_parameters
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('data_root = "../_build/data"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('data_root = "/work/main/_build/data"', metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(data_root)")])
    nb.metadata["papermill"] = {"parameters": {"data_root": "/work/main/_build/data"}}
    nbformat.write(nb, tmp_path / "page.ipynb")
    drop_injected_parameters(tmp_path / "page.ipynb")
    kept = nbformat.read(tmp_path / "page.ipynb", as_version=4)
    assert [c.source for c in kept.cells] == ['data_root = "../_build/data"', "print(data_root)"]
    assert "papermill" not in kept.metadata


def test_the_book_no_longer_attributes_to_the_paper_what_it_does_not_say():
    """Claims a line-by-line reading of the paper did not support (issue: faithful to the paper)."""
    text = "\n".join(p.read_text() for p in sorted((REPO / "book").glob("*.md")))
    for claim in ("3,227", "this study on the 3,984", "exactly as the paper describes",
                  "exactly as the paper writes them", "with the released hyper-parameters, on CPU"):
        assert claim not in text, claim


def test_the_departures_page_is_in_the_toc_and_linked_from_the_intro_and_chapters_4_to_9():
    assert "book/departures" in chapter_order(REPO / "_toc.yml")
    for page in ("intro", "04_pretraining", "05_brain_age_sex", "06_alzheimers", "07_schizophrenia_autism",
                 "08_clinical_scores", "09_summary"):
        assert "{doc}`departures`" in (REPO / "book" / f"{page}.md").read_text(), page
    departures = (REPO / "book" / "departures.md").read_text()
    for topic in ("tf_none", "normTrue", "kernel: gaussian", "l1_target", "protocol: paper", "obhn64", "subsetTrue"):
        assert topic in departures, topic


def test_the_book_does_not_say_the_engine_flips_or_always_augments():
    text = "\n".join(p.read_text() for p in sorted((REPO / "book").glob("*.md")))
    for claim in ("always crops, flips", "crops, flips, blurs", "there is no\nswitch for it yet"):
        assert claim not in text, claim


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_of_each_chapter(path, tmp_path):
    """papermill parses the parameters cell line by line; a comment it cannot read makes it skip the line."""
    import papermill

    notebook = notebook_from_source(path, tmp_path / "chapter.ipynb")
    assert set(papermill.inspect_notebook(str(notebook))) == chapter_parameters(REPO)[path.stem]


def test_chapters_get_their_paths_relative_to_where_they_run(tmp_path):
    """The injected parameters cell is shown on the page: it must not carry the build machine's paths."""
    from anatcl_core.book import relative_paths
    folder = tmp_path / "_build" / "source" / "book"
    params = {"data_root": str(tmp_path / "_build" / "data" / "w"), "output_dir": str(tmp_path / "out"), "seed": 0}
    assert relative_paths(params, folder) == {"data_root": "../../data/w", "output_dir": "../../../out"}
    assert (folder / relative_paths(params, folder)["data_root"]).resolve() == Path(params["data_root"])


def test_mathjax_is_copied_into_the_book_so_equations_need_no_network(tmp_path):
    from anatcl_core.book import vendor_mathjax
    target = vendor_mathjax(tmp_path / "_static" / "mathjax")
    loader = target / "tex-mml-chtml.js"
    assert loader.stat().st_size > 500_000 and b"MathJax" in loader.read_bytes()
    assert len(list((target / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))) > 10
    config = (REPO / "_config.yml").read_text()
    assert 'mathjax_path: "mathjax/tex-mml-chtml.js"' in config and '"book/_static"' in config


def test_no_page_of_the_book_carries_a_placeholder():
    """A sentence waiting for its number ('MEASUREMENT', 'TODO') must not reach a reader."""
    for page in sorted((REPO / "book").glob("*.md")):
        found = re.findall(r"\b(?:TODO|TBD|FIXME|MEASUREMENT|XXX)\b", page.read_text())
        assert not found, f"{page.name}: placeholder(s) {found}"


def test_the_book_without_mathjax_names_the_extra_in_one_line(monkeypatch, capsys):
    import importlib.util

    from anatcl_core.cli import main
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mathjax" else real(name, *a))
    assert main(["book", "--params", "ci"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mathjax missing" in err and "anatcl-core[book]" in err, err

"""`anatcl book`: make the data if missing, execute every chapter with papermill, render with Jupyter Book 1.x.

The chapters in `book/` are MyST Markdown notebooks (text, so they diff and review like code; jupytext
reads them), committed without outputs. Each run copies the book sources into `<build>/source/`, turns each
chapter into an `.ipynb` there (papermill executes only `.ipynb`), executes them in `_toc.yml` order (so
pretraining runs before the chapters that read its checkpoints) with the chapter's parameters injected,
then renders `<build>/html` with execution off. A failing cell stops the build and names the chapter and the
cell. The chapters' kernels run with the CPU caps of `anatcl_core.precision.REPRODUCIBLE_CPU_ENV`, so AVX2 and
AVX-512 machines compute alike. A parameters file is checked against the chapters' parameter cells before any
work, and the build folder is refused when it holds folders `anatcl book` did not make.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from anatcl_core.precision import apply_reproducible_cpu_env

REPO = Path(__file__).resolve().parent.parent
#: Copied beside book/ for every build; benchmarks/results holds the recorded runs a chapter shows beside its own.
BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib", "benchmarks/results")
PRESETS = ("default", "ci", "paper")          # book/params/<name>.yaml


def source_root() -> Path:
    """Where the book's sources are: the copy a wheel installs (setup.py), else the repository checkout."""
    installed = Path(__file__).resolve().parent / "book_sources"
    return installed if (installed / "_toc.yml").exists() else REPO


def params_path(spec: str | Path) -> Path:
    """A preset name (default, ci, paper) -> its YAML among the book's sources; anything else is a path."""
    return source_root() / "book" / "params" / f"{spec}.yaml" if str(spec) in PRESETS else Path(spec)
PATH_PARAMS = ("data_root", "output_dir")


class ChapterFailed(RuntimeError):
    """A chapter's cell raised; the message names the chapter and the cell."""


def load_params(path: str | Path) -> dict:
    """Read a params YAML (or a preset name): `common` (injected into every chapter) and `chapters: {name: {...}}`
    overrides."""
    path = params_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: book parameters file not found; expected a YAML file or one of the "
                                f"presets {', '.join(PRESETS)}")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(params, dict) or not isinstance(params.get("common", {}), dict):
        raise ValueError(f"{path}: expected a mapping with a 'common' mapping of parameters")
    check_params(params, path)
    return params


def chapter_parameters(root: Path | None = None) -> dict[str, set[str]]:
    """{chapter name: names its `parameters` cell assigns}, read from the book's MyST sources."""
    import ast

    import jupytext

    found = {}
    for chapter in sorted(((root or source_root()) / "book").glob("*.md")):
        if is_notebook_source(chapter):
            cell = next(c for c in jupytext.read(chapter).cells if "parameters" in c.metadata.get("tags", []))
            found[chapter.stem] = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                                   for t in node.targets if isinstance(t, ast.Name)}
    return found


def check_params(params: dict, path: Path) -> None:
    """Refuse, before any work, what papermill would only warn about: an unknown key, chapter or parameter (a
    typo would silently run with the chapter's default), and a missing data_root or output_dir."""
    unknown = set(params) - {"common", "chapters", "build_dir"}
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; expected common, chapters, build_dir")
    chapters = params.get("chapters") or {}
    if not isinstance(chapters, dict) or not all(isinstance(v, (dict, type(None))) for v in chapters.values()):
        raise ValueError(f"{path}: field 'chapters' must map chapter names to mappings of parameters")
    cells = chapter_parameters()
    missing = [k for k in PATH_PARAMS if k not in params.get("common", {})]
    if missing:
        raise ValueError(f"{path}: field 'common' lacks {missing}; every chapter reads and writes there")
    for name, chapter in chapters.items():
        if name not in cells:
            raise ValueError(f"{path}: chapters.{name}: no such chapter; expected one of {sorted(cells)}")
        extra = set(chapter or {}) - cells[name]
        if extra:
            raise ValueError(f"{path}: chapters.{name}: unknown parameter(s) {sorted(extra)}; the chapter has "
                             f"{sorted(cells[name])}")
    for key in params.get("common", {}):
        lacking = [name for name, names in cells.items() if key not in names]
        if lacking:
            raise ValueError(f"{path}: common.{key}: not a parameter of {lacking}; put it under chapters.<name>")


def chapter_order(toc_path: Path) -> list[str]:
    """Notebook paths (without suffix) in reading order from `_toc.yml`."""
    toc = yaml.safe_load(toc_path.read_text())
    entries = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        entries += [c["file"] for c in part.get("chapters", [])]
    return entries


def is_notebook_source(path: Path) -> bool:
    """A MyST Markdown notebook: a `.md` file whose front matter names a kernel (a plain page has none)."""
    if path.suffix != ".md":
        return False
    text = path.read_text()
    return text.startswith("---") and "kernelspec:" in text.split("\n---", 1)[0]


def notebook_from_source(source: Path, notebook: Path) -> Path:
    """Write the `.ipynb` of a MyST Markdown chapter (cells, tags and kernel kept; no outputs)."""
    import jupytext

    jupytext.write(jupytext.read(source), notebook, fmt="ipynb")
    return notebook


def execute_chapter(notebook: Path, parameters: dict, cwd: Path) -> None:
    """Run one notebook in place with papermill; raise ChapterFailed naming the failing cell."""
    import papermill

    try:
        papermill.execute_notebook(str(notebook), str(notebook), parameters=parameters, cwd=str(cwd),
                                   kernel_name="python3", progress_bar=False, log_output=False)
    except papermill.PapermillExecutionError as err:
        raise ChapterFailed(f"chapter {notebook.name}: cell {err.exec_count} raised {err.ename}: {err.evalue}"
                            ) from None
    collapse_parameters(notebook)


def collapse_parameters(notebook: Path) -> None:
    """Tag the default and the injected parameter cells `hide-input`: the page shows them behind a toggle."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "hide-input" not in tags:
            tags.append("hide-input")
    nbformat.write(nb, notebook)


def build(params_file: str | Path, build_dir: str | Path | None = None) -> Path:
    """Execute all chapters with the given parameters and render HTML; returns the html folder."""
    params = load_params(params_file)
    apply_reproducible_cpu_env()       # the chapters' kernels compute alike on AVX2 and AVX-512 CPUs
    build_dir = claim_build_dir(Path(build_dir or params.get("build_dir", "_build")).resolve())
    source, origin = build_dir / "source", source_root()
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(origin / "book", source / "book", ignore=shutil.ignore_patterns("params", ".ipynb_checkpoints"))
    for name in BOOK_FILES:
        if (origin / name).is_dir():
            shutil.copytree(origin / name, source / name)
        elif (origin / name).exists():
            shutil.copy2(origin / name, source / name)
    for chapter in sorted((source / "book").glob("*.md")):
        if is_notebook_source(chapter):     # the .ipynb replaces it: Jupyter Book must see one file per page
            notebook_from_source(chapter, chapter.with_suffix(".ipynb"))
            chapter.unlink()
    common = dict(params.get("common", {}))
    for key in PATH_PARAMS:   # resolved here; each chapter gets them relative to the folder it runs in
        if key in common:
            common[key] = str(Path(common[key]).expanduser().resolve())
    timings = build_dir / "timings.csv"
    timings.write_text("step,seconds,status\n")
    if common.get("data_source", "synthetic") == "synthetic":
        with _timed(timings, "synthetic data"):
            prepare_data(common)
    for entry in chapter_order(source / "_toc.yml"):
        notebook = source / f"{entry}.ipynb"
        if notebook.exists():
            chapter_params = {**common, **params.get("chapters", {}).get(Path(entry).name, {})}
            chapter_params.update(relative_paths(chapter_params, notebook.parent))
            print(f"[anatcl book] executing {entry} with {chapter_params}", flush=True)
            with _timed(timings, entry):
                execute_chapter(notebook, chapter_params, cwd=notebook.parent)
    render = build_dir / "render"
    vendor_mathjax(source / "book" / "_static" / "mathjax")
    with _timed(timings, "jupyter-book build"):
        subprocess.run([str(Path(sys.executable).with_name("jupyter-book")), "build", str(source),
                        "--path-output", str(render), "--keep-going"], check=True)
    html = build_dir / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.move(render / "_build" / "html", html)
    for download in (html / "_sources").rglob("*.ipynb"):
        drop_injected_parameters(download)
    return html


#: What MathJax 3 needs from its es5 build: the loader _config.yml's mathjax_path names, and its fonts.
MATHJAX_FILES = ("tex-mml-chtml.js", "output/chtml/fonts/woff-v2")


def vendor_mathjax(target: Path) -> Path:
    """Copy MathJax 3 (from the `django-static-mathjax` package of the book extra) to `target`, the book's
    `_static/mathjax/`, so pages typeset equations with no network (Sphinx's default loads it from a CDN)."""
    from importlib import resources

    origin = resources.files("mathjax") / "static" / "mathjax" / "es5"      # `anatcl book` checked it is there
    for name in MATHJAX_FILES:
        source, destination = Path(str(origin / name)), target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination, dirs_exist_ok=True)
        else:
            shutil.copy2(source, destination)
    return target


def relative_paths(chapter_params: dict, folder: Path) -> dict[str, str]:
    """The path parameters relative to `folder`, where the chapter runs: its page (the injected parameters
    cell) then shows `../../data/...`, never the build machine's absolute paths. Absolute where no relative
    path exists (another drive on Windows)."""
    out = {}
    for key in PATH_PARAMS:
        if key in chapter_params:
            try:
                out[key] = os.path.relpath(chapter_params[key], folder)
            except ValueError:
                out[key] = chapter_params[key]
    return out


BUILD_MARKER = ".anatcl-book-build"


def claim_build_dir(build_dir: Path) -> Path:
    """The build folder, refused if it holds a `source/`, `html/` or `render/` that `anatcl book` did not make:
    a build replaces those, and must never delete a user's folders of the same name."""
    timings = build_dir / "timings.csv"
    ours = (build_dir / BUILD_MARKER).exists() or (       # or a build from before the marker existed
        timings.is_file() and timings.read_text()[:13] == "step,seconds,")
    theirs = [name for name in ("source", "html", "render", "timings.csv") if (build_dir / name).exists()]
    if theirs and not ours:
        raise ValueError(f"--build-dir {build_dir}: holds {', '.join(theirs)} that anatcl book did not make and "
                         "would replace; choose an empty folder or an earlier build's")
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / BUILD_MARKER).write_text("made by anatcl book: source/, render/, html/ and timings.csv here "
                                          "are replaced by the next build\n")
    return build_dir


def drop_injected_parameters(notebook: Path) -> None:
    """Remove papermill's injected cell from a page's downloadable notebook: it holds this machine's absolute
    paths, while the chapter's own parameters cell works anywhere (the page still shows what was injected)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    nb.metadata.pop("papermill", None)           # papermill's record of the same paths
    nbformat.write(nb, notebook)


@contextlib.contextmanager
def _timed(log: Path, step: str):
    """Append `step,seconds,status` to the build's timings CSV (also printed), so slow chapters are visible;
    a step that raises is recorded as `failed` with the time it took, then the error goes on."""
    start, status = time.perf_counter(), "failed"
    try:
        yield
        status = "ok"
    finally:
        seconds = time.perf_counter() - start
        print(f"[anatcl book] {step}: {seconds:.0f} s ({status})", flush=True)
        with log.open("a") as f:
            f.write(f"{step},{seconds:.1f},{status}\n")


def prepare_data(common: dict) -> None:
    """Book hook: make the synthetic default under `data_root` when the parameters ask for it."""
    from anatcl_core.data.synthetic import DEFAULT_N_SUBJECTS, DEFAULT_VOXEL_SIZE, ensure_synthetic_data

    if common.get("data_source", "synthetic") == "synthetic" and "data_root" in common:
        ensure_synthetic_data(common["data_root"], int(common.get("n_subjects", DEFAULT_N_SUBJECTS)),
                              float(common.get("resolution", DEFAULT_VOXEL_SIZE)), int(common.get("seed", 0)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="default",
                        help=f"a preset ({', '.join(PRESETS)}) or a YAML file with `common` parameters and "
                             "per-chapter overrides (default: default, the book's CPU configuration)")
    parser.add_argument("--build-dir", default=None,
                        help="where the executed chapters and the HTML go (default: ./_build); data_root and "
                             "output_dir come from the parameters, relative to the current directory")


def run(args: argparse.Namespace) -> int:
    import importlib.util

    # `mathjax` is django-static-mathjax's package: the equations' script, served with the book
    lacking = [m for m in ("papermill", "jupytext", "jupyter_book", "nbformat", "mathjax")
               if importlib.util.find_spec(m) is None]
    if lacking:
        raise ValueError(f"the book needs the package's book extra ({', '.join(lacking)} missing): "
                         "pip install 'anatcl-core[book]'")
    try:
        html = build(args.params, args.build_dir)
    except ChapterFailed as err:
        print(f"anatcl book: {err}", file=sys.stderr)
        return 1
    print(f"[anatcl book] rendered {html / 'index.html'}")
    return 0

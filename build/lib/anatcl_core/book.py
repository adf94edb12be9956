"""`anatcl book`: make the data if missing, execute every chapter with papermill, render with Jupyter Book 1.x.

The chapters in `book/` are MyST Markdown notebooks (text, so they diff and review like code; jupytext
reads them), committed without outputs. Each run copies the book sources into `<build>/source/`, turns each
chapter into an `.ipynb` there (papermill executes only `.ipynb`), executes them in `_toc.yml` order (so
pretraining runs before the chapters that read its checkpoints) with the chapter's parameters injected,
then renders `<build>/html` with execution off. A failing cell stops the build and names the chapter and the cell. The chapters' kernels run
with the CPU caps of `anatcl_core.precision.REPRODUCIBLE_CPU_ENV`, so AVX2 and AVX-512 machines compute alike.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from anatcl_core.precision import apply_reproducible_cpu_env

REPO = Path(__file__).resolve().parent.parent
BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")
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
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict) or not isinstance(params.get("common", {}), dict):
        raise ValueError(f"{path}: expected a mapping with a 'common' mapping of parameters")
    return params


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
    build_dir = Path(build_dir or params.get("build_dir", "_build")).resolve()      # relative to where we run
    source, origin = build_dir / "source", source_root()
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(origin / "book", source / "book", ignore=shutil.ignore_patterns("params", ".ipynb_checkpoints"))
    for name in BOOK_FILES:
        if (origin / name).exists():
            shutil.copy2(origin / name, source / name)
    for chapter in sorted((source / "book").glob("*.md")):
        if is_notebook_source(chapter):     # the .ipynb replaces it: Jupyter Book must see one file per page
            notebook_from_source(chapter, chapter.with_suffix(".ipynb"))
            chapter.unlink()
    common = dict(params.get("common", {}))
    for key in PATH_PARAMS:   # chapters run inside the build folder: hand them absolute paths
        if key in common:
            common[key] = str(Path(common[key]).expanduser().resolve())
    timings = build_dir / "timings.csv"
    timings.write_text("step,seconds,status\n")
    with _timed(timings, "synthetic data"):
        prepare_data(common)
    for entry in chapter_order(source / "_toc.yml"):
        notebook = source / f"{entry}.ipynb"
        if notebook.exists():
            chapter_params = {**common, **params.get("chapters", {}).get(Path(entry).name, {})}
            print(f"[anatcl book] executing {entry} with {chapter_params}", flush=True)
            with _timed(timings, entry):
                execute_chapter(notebook, chapter_params, cwd=notebook.parent)
    render = build_dir / "render"
    with _timed(timings, "jupyter-book build"):
        subprocess.run([str(Path(sys.executable).with_name("jupyter-book")), "build", str(source),
                        "--path-output", str(render), "--keep-going"], check=True)
    html = build_dir / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.move(render / "_build" / "html", html)
    return html


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
    try:
        html = build(args.params, args.build_dir)
    except ChapterFailed as err:
        print(f"anatcl book: {err}", file=sys.stderr)
        return 1
    print(f"[anatcl book] rendered {html / 'index.html'}")
    return 0

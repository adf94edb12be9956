"""One source for the defaults: `book/params/default.yaml` is what `make book` runs; the chapters' parameter
cells, the CLI defaults that make the same data, and the prose tables must say the same."""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

from anatcl_core.book import is_notebook_source, load_params
from anatcl_core.cli import build_parser
from anatcl_core.data.synthetic import DEFAULT_N_SUBJECTS, DEFAULT_VOXEL_SIZE
from anatcl_core.pretrain import PretrainConfig

REPO = Path(__file__).resolve().parent.parent
DEFAULT = load_params(REPO / "book" / "params" / "default.yaml")
CHAPTERS = sorted(p for p in (REPO / "book").glob("*.md") if is_notebook_source(p))
PATHS = ("data_root", "output_dir")        # the yaml's are relative to the repository, the cells' to book/


def cell_parameters(chapter: Path) -> dict:
    """The values the chapter's `parameters` cell assigns, by executing that cell alone."""
    cell = next(c for c in jupytext.read(chapter).cells if "parameters" in c.metadata.get("tags", []))
    values: dict = {}
    exec(cell.source, {}, values)
    return values


def test_the_default_world_is_the_generators_default():
    common = DEFAULT["common"]
    assert (common["n_subjects"], common["resolution"]) == (DEFAULT_N_SUBJECTS, DEFAULT_VOXEL_SIZE)
    assert common["data_source"] == "synthetic" and common["seed"] == 0
    # one folder per world: the name says its resolution and size
    assert common["data_root"].endswith(f"synthetic-{DEFAULT_VOXEL_SIZE:g}mm-{DEFAULT_N_SUBJECTS}")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_each_parameter_cell_says_what_default_yaml_says(chapter):
    cell = cell_parameters(chapter)
    wanted = {**DEFAULT["common"], **DEFAULT.get("chapters", {}).get(chapter.stem, {})}
    for name, value in wanted.items():
        assert name in cell, f"{chapter.name}: no parameter {name}"
        if name in PATHS:
            assert (chapter.parent / cell[name]).resolve() == (REPO / value).resolve(), f"{chapter.name}: {name}"
        else:
            assert cell[name] == value, f"{chapter.name}: {name} = {cell[name]!r}, default.yaml: {value!r}"


def test_shared_chapter_parameters_agree_across_chapters():
    cells = {c.stem: cell_parameters(c) for c in CHAPTERS}
    for name in ("methods", "released_home", "baselines", "protocol", "fold", "n_splits", "small_class_repeats", "width", "lr", "epochs", "batch_size",
                 "max_steps_per_epoch"):
        values = {stem: repr(v[name]) for stem, v in cells.items() if name in v}
        assert len(set(values.values())) == 1, f"{name} differs between chapters: {values}"


def test_the_synth_command_makes_the_books_world_by_default():
    argv = ["synth", "--out", "x"]
    args = build_parser(argv).parse_args(argv)
    assert (args.n_subjects, args.resolution, args.seed) == (DEFAULT_N_SUBJECTS, DEFAULT_VOXEL_SIZE, 0)


def test_probe_command_and_chapters_use_the_same_folds():
    argv = ["probe", "--checkpoint", "a.pth", "--data", "d", "--out", "o.csv"]
    args = build_parser(argv).parse_args(argv)
    assert args.n_splits == cell_parameters(REPO / "book" / "05_brain_age_sex.md")["n_splits"]


def _reproduce_table() -> dict[str, tuple[str, str]]:
    page = (REPO / "book" / "reproduce.md").read_text()
    section = page.split("## The paper's configuration", 1)[1].split("\n\n", 2)[1]
    rows = [line.strip("|").split("|") for line in section.splitlines()[2:]]
    return {re.search(r"`(\w+)`", row[0]).group(1): (row[1].strip(), row[2].strip())
            for row in rows if re.search(r"`(\w+)`", row[0])}


def _leading_number(cell: str) -> float:
    return float(re.match(r"[\d.e-]+", cell).group(0))


def test_the_reproduce_pages_table_shows_the_cpu_default_and_the_papers_settings():
    table = _reproduce_table()
    cpu = DEFAULT["chapters"]["04_pretraining"]
    paper = PretrainConfig(cohort="", method="anatcl-local", out="")
    assert {"width", "lr", "epochs", "batch_size", "max_steps_per_epoch"} <= set(table)
    for name, (here, theirs) in table.items():
        assert _leading_number(here) == pytest.approx(cpu[name]), f"reproduce.md: {name} CPU column {here!r}"
        assert _leading_number(theirs) == pytest.approx(getattr(paper, name)), f"reproduce.md: {name} {theirs!r}"
    assert f"{DEFAULT_N_SUBJECTS} subjects" in (REPO / "book" / "reproduce.md").read_text()


def test_paper_yaml_asks_for_the_papers_pretraining():
    paper_params = load_params(REPO / "book" / "params" / "paper.yaml")["chapters"]["04_pretraining"]
    paper = PretrainConfig(cohort="", method="anatcl-local", out="")
    for name, value in paper_params.items():
        expected = pytest.approx(value) if isinstance(value, float) else value
        assert getattr(paper, name) == expected, f"paper.yaml: {name}"


def test_paper_yaml_explains_every_token_of_the_released_run_name():
    from anatcl_core.released import _RELEASED_RUN

    comments = "\n".join(line for line in (REPO / "book" / "params" / "paper.yaml").read_text().splitlines()
                         if line.startswith("#"))
    name = _RELEASED_RUN.split("/")[0].format(descriptor="local", fold=0)
    compounds = ("tf_none", "trainall_False", "kernel_rbf", "anat_desikan")     # option name + value
    tokens = set("_".join(name.split("_")).split("_")) - {part for c in compounds for part in c.split("_")}
    tokens = (tokens - {"fold0"}) | set(compounds) | {"fold0..4"}
    missing = [t for t in sorted(tokens) if not re.search(rf"(?<![\w.]){re.escape(t)}(?![\w.])", comments)]
    assert not missing, f"paper.yaml does not list the run-name token(s) {missing}"


def test_every_chapter_installs_the_package_the_same_way_as_the_readme_says():
    cells = {c.stem: jupytext.read(c).cells[1] for c in CHAPTERS}
    assert len({cell.source for cell in cells.values()}) == 1, "the install cells differ between chapters"
    spec = re.search(r'"(anatcl-core\[book\] @ [^"]+)"', next(iter(cells.values())).source).group(1)
    assert spec in (REPO / "README.md").read_text() and spec in (REPO / "book" / "intro.md").read_text()

"""Ships the book with the package: a wheel carries the chapters, the parameter presets and the Jupyter Book
configuration under `anatcl_core/book_sources/`, so `anatcl book` works after a plain `pip install`, from any
directory. In a checkout (an editable install) `anatcl_core.book` reads them from the repository instead.
Everything else about the package is in pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BOOK_SOURCES = ("book", "_config.yml", "_toc.yml", "references.bib", "benchmarks/results")   # book.BOOK_FILES + book


class BuildPyWithBook(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "anatcl_core" / "book_sources"
        shutil.rmtree(target, ignore_errors=True)
        for name in BOOK_SOURCES:
            source = Path(name)
            if not source.exists():          # e.g. benchmarks/results before any recorded run
                continue
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
            else:
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildPyWithBook})

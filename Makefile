# The two commands of the README: `make book` and `make test`. Both bootstrap .venv from nothing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PARAMS ?= book/params/default.yaml
STAMP := $(VENV)/.installed

.PHONY: venv test book bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned (constraints.txt): an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet -c constraints.txt torch
	$(BIN)/pip install --quiet -c constraints.txt -e '.[book,dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -q

book: venv
	$(BIN)/anatcl book --params $(PARAMS)

bench: venv
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf _build

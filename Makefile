# `make train` and `make test` each set everything up from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= runs/default
PYTEST_WORKERS ?= 2

.PHONY: install train test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,hf]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) -m research.train --config default --workdir $(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --durations=15

clean:
	rm -rf $(VENV) runs .pytest_cache

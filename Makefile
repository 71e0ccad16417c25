# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fovea-installed

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fovea demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check fovea tests bench
	$(BIN)/ruff format --check fovea tests bench

# A benchmark that refuses a verdict (noisy machine) or misses its goal exits non-zero;
# `-` lets the others still run.
bench: $(STAMP)
	-$(BIN)/python bench/overhead.py
	-$(BIN)/python bench/predict.py
	-$(BIN)/python bench/drift.py
	$(BIN)/python bench/detection.py
	$(BIN)/python bench/segmentation.py
	$(BIN)/python bench/dashboard.py

clean:
	rm -rf .fovea

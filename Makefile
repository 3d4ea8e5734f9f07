# Two commands do everything: `make demo` and `make test`. Each builds .venv if it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/datalaws demo --out demo_out

test: $(STAMP)  # one worker per core; a test file's tests share a worker (module fixtures)
	$(BIN)/python -m pytest -q -n auto --dist loadfile tests

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/pip install -q torch==2.13.0  # the CPU wheel on disk: the PyTorch reference
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) demo_out

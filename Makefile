# Two commands do everything: `make demo` and `make test`. Each builds .venv if it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean aot

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/datalaws demo --out demo_out

# Compile-only TPU / GPU compilers for `datalaws preflight` and its tests (../shared/AOT.md):
# .venv-tpu / .venv-gpu see .venv's packages (a .pth) and add only the pinned plugin wheels
# of the pyproject extras aot-tpu / aot-gpu, so libtpu and CUDA never enter .venv itself.
AOT_SITE = $$($(1)/bin/python -c 'import site; print(site.getsitepackages()[0])')
AOT_PINS = $$($(BIN)/python -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['$(1)']))")

.venv-%/.installed: $(STAMP)
	test -x .venv-$*/bin/python || $(PY) -m venv .venv-$*
	echo "import site; site.addsitedir('$(abspath $(VENV))/lib/python$$($(BIN)/python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')/site-packages')" \
	  > $(call AOT_SITE,.venv-$*)/datalaws-base.pth
	.venv-$*/bin/pip install -q $(call AOT_PINS,aot-$*)
	if [ $* = gpu ]; then .venv-gpu/bin/pip install -q --no-deps 'nvidia-cudnn-cu12>=9.8,<9.9'; fi
	touch $@

aot: .venv-tpu/.installed .venv-gpu/.installed

test: $(STAMP) aot  # one worker per core; a test file's tests share a worker (module fixtures)
	$(BIN)/python -m pytest -q -n auto --dist loadfile tests

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/pip install -q torch==2.13.0  # the CPU wheel on disk: the PyTorch reference
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .venv-tpu .venv-gpu demo_out

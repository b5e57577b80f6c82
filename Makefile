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

# WeasyPrint renders the PDF with Pango. If Pango is missing: as root with apt-get,
# install it; otherwise stop and print the command to run.
system-deps:
	@if ldconfig -p | grep -q 'libpango-1.0.so.0' && ldconfig -p | grep -q 'libpangoft2-1.0.so.0'; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Pango for WeasyPrint (apt-get)"; \
	  apt-get update -qq && apt-get install -y -qq libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 >/dev/null; \
	else \
	  echo "Error: WeasyPrint needs Pango. Run: sudo apt-get install libpango-1.0-0 libpangoft2-1.0-0" >&2; exit 1; \
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

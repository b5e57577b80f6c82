# Auditor: `make demo` audits the bundled sample model, `make test` runs lint, types and tests.
# Both create .venv on first use and install the project into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# This machine serves these two from its disk; elsewhere any torch >= 2.4 works.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench system-deps browser-deps clean

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# WeasyPrint renders the PDF with Pango, and subsets fonts with HarfBuzz-Subset (without
# it every run prints warnings); tests/test_browser.py opens report.html in Debian's
# headless Chromium through chromedriver (needed by `make test` only). Each is installed
# when missing: as root with apt-get; otherwise stop and print the command to run. Pairs
# are what to look for and the Debian package that provides it.
SYSTEM_LIBS := libpango-1.0.so.0:libpango-1.0-0 libpangoft2-1.0.so.0:libpangoft2-1.0-0 \
	libharfbuzz-subset.so.0:libharfbuzz-subset0
BROWSER_COMMANDS := chromium:chromium chromedriver:chromium-driver

# $(call install-missing,FOR,PAIRS,FOUND): apt-get install each PAIRS package whose thing
# the shell command FOUND (given the thing) does not find.
define install-missing
	@missing=""; for pair in $(2); do \
	  $(3) "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing$$missing for $(1) (apt-get)"; \
	  apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "Error: $(1) needs$$missing. Run: sudo apt-get install$$missing" >&2; exit 1; \
	fi
endef

system-deps:
	$(call install-missing,WeasyPrint,$(SYSTEM_LIBS),ldconfig -p | grep -q)

browser-deps:
	$(call install-missing,the browser test,$(BROWSER_COMMANDS),command -v)

demo: $(STAMP)
	$(BIN)/auditor demo

lint: $(STAMP)
	$(BIN)/ruff check auditor tests benchmarks sample_models

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) browser-deps
	$(BIN)/python -m pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_evaluate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist

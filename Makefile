# The verbs of the README. Everything is installed by these targets, nothing by hand.
PYTHON ?= python3
UV_VERSION := 0.13.8
UV := .tools/bin/uv
RUN := $(UV) run --frozen
SECM_HOME ?= .secm
DEMO_DATA := $(SECM_HOME)/demo-data
DEMO_LINES ?= 200000
# The browser the workbench's tests drive: Debian's Chromium (browsers are not downloaded).
CHROMIUM ?= /usr/bin/chromium
# Test processes side by side (pytest-xdist): much of the suite waits on servers, Spark and
# subprocesses, so two save a third of its time even on two cores. 0 runs it in one.
TEST_WORKERS ?= 2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install browser test lint demo bench clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Bytecode compiled once here: where PYTHONDONTWRITEBYTECODE is set (CI machines, containers),
# every process would otherwise compile scikit-learn, SciPy and pandas anew (4 s of each run).
.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --compile-bytecode
	touch $@

install: .venv/.synced

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .

browser:
	@test -x $(CHROMIUM) || { echo "Installing Debian's chromium for the workbench's browser tests"; \
	  $(SUDO) apt-get install -y --no-install-recommends chromium || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; }; }

test: lint browser
	SECM_CHROMIUM=$(CHROMIUM) $(RUN) pytest --numprocesses $(TEST_WORKERS)

demo: install
	$(RUN) secm synth --out $(DEMO_DATA) --lines $(DEMO_LINES) --seed 42
	$(RUN) secm train --data $(DEMO_DATA) --promote --approved-by demo
	$(RUN) secm run --data $(DEMO_DATA) --out $(SECM_HOME)/runs/demo
	$(RUN) secm whatif --data $(DEMO_DATA) --legislation reform_art174 --out $(SECM_HOME)/runs/demo/whatif_reform_art174.csv
	@echo "Results: $(SECM_HOME)/runs/demo (flags, quarantine, provider scores, run.json), published to $(SECM_HOME)/secm.db."
	@TOKEN=$$($(RUN) secm token create --role admin --name demo-$$(date +%s) 2>/dev/null | tail -n 1); \
	echo ""; echo "Service: http://127.0.0.1:8000  (docs: http://127.0.0.1:8000/docs)"; \
	echo "Workbench: http://127.0.0.1:8000/  (sign in with the token below)"; \
	echo "Token:   $$TOKEN"; \
	echo "Try:     curl -H 'Authorization: Bearer $$TOKEN' http://127.0.0.1:8000/providers/flagged"; echo ""; \
	$(RUN) secm serve --host 127.0.0.1 --port 8000

bench: install
	$(RUN) python bench/bench_pipeline.py --lines 10000000 --sample 1000000
	$(RUN) python bench/bench_detectors.py --providers 50000 --lines 3000000
	$(RUN) python bench/bench_load.py --clients 200 --seconds 60 --workers 2 --publish-during
	$(RUN) python bench/bench_claims.py --lines 200000

clean:
	rm -rf .venv .tools $(SECM_HOME)

# Two set-up commands: `make run` and `make test`. Both need only python3 on the machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
STUDY ?= studies/im83.yaml
DEMO_SEED ?= 83
DEMO_CUT ?= 2025-12-31
DEMO_EXPORT := demo/export
OUT ?= output
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: install run test ui demo clean freeze verify audit bench intake

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) $(DAGSTER_HOME)/dagster.yaml

$(DAGSTER_HOME)/dagster.yaml: pipelines/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp pipelines/dagster.yaml $@

demo: install
	rm -rf $(DEMO_EXPORT)
	$(BIN)/python -m pipelines simulate --study $(STUDY) --seed $(DEMO_SEED) --data-cut $(DEMO_CUT) --out $(DEMO_EXPORT) --truth demo/truth.json

run: demo
	$(BIN)/python -m pipelines run --study $(STUDY) --export $(DEMO_EXPORT) --data-cut $(DEMO_CUT) --out $(OUT)

test: install
	$(BIN)/python -m pytest -q

# Benchmark (docs/performance.md): the demo export, then N simulated participants for each N in
# BENCH_N; one JSON per run in bench/ and a table on stdout. `make bench BENCH_N=10000` for one size.
BENCH_N ?= 100 1000 10000
bench: install
	mkdir -p bench
	$(BIN)/python -m pipelines bench --demo --out bench/bench_demo.json
	set -e; for n in $(BENCH_N); do $(BIN)/python -m pipelines bench --participants $$n --out bench/bench_$$n.json; done
	$(BIN)/python -m pipelines.bench --table bench/bench_demo.json $(foreach n,$(BENCH_N),bench/bench_$(n).json)

ui: install
	$(BIN)/dagster dev -w workspace.yaml

# Archive (read-only, under $(OUT)/<study>/archive) and run each new complete export folder of the
# landing area, landing/<study>/<export id>/, once: what the landing sensor does (docs/ingest.md).
LANDING ?= landing
intake: install
	$(BIN)/python -m pipelines intake --study $(STUDY) --landing $(LANDING) --out $(OUT)

# Lock a data cut for a DSMB meeting, regenerate it byte for byte, show the audit log:
#   make freeze CUT=2025-12-31 REASON="DSMB meeting 2026-01-20"; make verify CUT=2025-12-31; make audit
CUT ?= $(DEMO_CUT)
freeze: install
	$(BIN)/python -m pipelines freeze --study $(STUDY) --data-cut $(CUT) --out $(OUT) --reason "$(REASON)"

verify: install
	$(BIN)/python -m pipelines verify --study $(STUDY) --data-cut $(CUT) --out $(OUT)

audit: install
	$(BIN)/python -m pipelines audit --study $(STUDY) --out $(OUT)

clean:
	chmod -R u+w $(OUT) 2>/dev/null || true  # frozen data cuts are read-only
	rm -rf demo $(OUT) .dagster_home

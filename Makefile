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

.PHONY: install run test ui demo clean

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

ui: install
	$(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf demo $(OUT) .dagster_home

# Two commands for a fresh machine: `make run` (set-up + dvc repro) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
# Nothing phones home: MLflow, DVC, Streamlit and deepeval telemetry off.
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export DEEPEVAL_TELEMETRY_OPT_OUT := YES
export STREAMLIT_BROWSER_GATHER_USAGE_STATS := false
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false
export PATH := $(abspath $(BIN)):$(PATH)
UI_PORT ?= 5000
APP_PORT ?= 8501

.PHONY: help install run test lint bench ui app clean model llm-check agents-demo

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m custseg.tracking  # MLflow's schema migrations, once per machine and version
	touch $@

install: $(STAMP)  ## create .venv and install the project (only when pyproject.toml changed)

run: install  ## set-up + dvc repro on params.yaml
	$(BIN)/dvc repro

test: install  ## the whole test suite (real MLflow, DVC, ...)
	$(BIN)/python -m pytest

lint: install  ## ruff lint + format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install  ## benchmarks in bench/ (ratios against baselines measured in the same run)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

ui: install  ## MLflow UI on 127.0.0.1:$(UI_PORT)
	@echo "MLflow UI: http://127.0.0.1:$(UI_PORT)"
	$(BIN)/mlflow server --backend-store-uri sqlite:///mlflow.db --default-artifact-root ./mlruns \
		--host 127.0.0.1 --port $(UI_PORT) --workers 1

model: install  ## fetch the bundled local LLM into the user cache (once; verified by SHA-256)
	$(BIN)/python -m custseg.llm fetch

llm-check: install  ## send one prompt through the configured LLM provider
	$(BIN)/python -m custseg.llm check

# Broker up, agents, submit eval/tasks.yaml, capture the conversations, stop the agents.
agents-demo: model kafka-up  ## the three agents over Kafka on the sample tasks → data/conversations.jsonl
	@mkdir -p logs
	@$(BIN)/python -m eval agents > logs/agents.log 2>&1 & agents=$$!; \
	trap 'kill $$agents 2>/dev/null; wait $$agents' EXIT; \
	echo "agents running (pid $$agents, log logs/agents.log)"; \
	$(BIN)/python -m eval submit --ids-out logs/demo-ids.txt >/dev/null && \
	$(BIN)/python -m eval capture --expect logs/demo-ids.txt --timeout 3600

include infra/kafka/kafka.mk

app: install  ## Streamlit app on 127.0.0.1:$(APP_PORT) (needs a registered model: make run)
	@echo "App: http://127.0.0.1:$(APP_PORT)"
	MLFLOW_UI_URL=$${MLFLOW_UI_URL-http://127.0.0.1:$(UI_PORT)} $(BIN)/streamlit run app/Home.py \
		--server.headless true --server.address 127.0.0.1 --server.port $(APP_PORT) \
		--browser.gatherUsageStats false

clean:  ## remove local MLflow stores and DVC outputs (keeps .venv)
	rm -rf mlflow.db mlruns data/customers.csv models/*.json metrics/*.json plots/*.csv

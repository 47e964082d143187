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
export NPM_CONFIG_UPDATE_NOTIFIER := false
export NPM_CONFIG_FUND := false
export NPM_CONFIG_AUDIT := false
export PATH := $(abspath $(BIN)):$(PATH)
UI_PORT ?= 5000
APP_PORT ?= 8501

.PHONY: help install lock run pull check test lint bench ui app serve clean model llm-check agents-demo agents-estimate champion \
	kafka-up kafka-down kafka-status team-up team-down team-status

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

UV_VERSION := 0.13.9

# Exact versions with hashes from the committed lock, then the project itself (no dependencies:
# the lock has them all; no build isolation: the locked setuptools builds it, nothing unhashed).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --progress-bar on --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	$(BIN)/custseg mlflow template  # MLflow's schema migrations, once per machine and version
	touch $@

# DVC's plots page renders offline: Vega, Vega-Lite and vega-embed at the versions (and integrity
# hashes) in vendor/vega/package-lock.json, inlined into the page template DVC uses.
VEGA := vendor/vega
VEGA_STAMP := $(VEGA)/node_modules/.package-lock.json
PLOTS_TEMPLATE := .dvc/plots/offline.html

$(VEGA_STAMP): $(VEGA)/package-lock.json
	npm ci --prefix $(VEGA) --ignore-scripts --prefer-offline --loglevel=error
	touch $@

$(PLOTS_TEMPLATE): $(VEGA_STAMP) $(STAMP) custseg/pipeline/plots_page.py
	$(BIN)/custseg plots template

install: $(STAMP) $(PLOTS_TEMPLATE)  ## create .venv from requirements.lock, install the project, build the offline plots page

lock:  ## renew requirements.lock from pyproject.toml's ranges, keeping current pins (UPGRADE=1 moves them)
	test -x .uv/bin/uv || { $(PYTHON) -m venv .uv && .uv/bin/pip install -q uv==$(UV_VERSION); }
	.uv/bin/uv pip compile pyproject.toml --extra dev --generate-hashes \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade) -o requirements.lock

# The params check first: a YAML syntax error gets one line here instead of DVC's parser dump.
run: install  ## set-up + dvc repro on params.yaml (first re-registers a pulled model: custseg mlflow restore)
	$(BIN)/python stages/check_params.py
	$(BIN)/custseg mlflow restore
	$(BIN)/dvc repro

# A fresh clone's data and models; before anyone pushed, one line says what to do instead.
pull: install  ## dvc pull from the DVC remote (nothing there yet: make run, then dvc push)
	$(BIN)/custseg pull

# The tiers (pyproject.toml lists the marks): `make check` leaves out the bundled LLM, Spark, the
# browser, chaos and the README-in-a-clone tests; `make test` runs them all and names the slowest.
# Two workers (WORKERS=1 runs serially); tests/conftest.py keeps the broker and the LLM in one.
CHECK_TIER := not (llm or spark or browser or chaos or clone)
WORKERS ?= 2
PYTEST = $(BIN)/python -m pytest $(if $(filter-out 1,$(WORKERS)),-n $(WORKERS) --dist loadgroup)

check: install  ## the fast tier for development (no bundled LLM, Spark, browser, chaos or clone)
	$(PYTEST) -m "$(CHECK_TIER)" --durations=10

test: install  ## the whole test suite (real DVC, MLflow, Kafka, LLM, Spark, browser), slowest 15 listed
	$(PYTEST) --durations=15

lint: install  ## ruff lint + format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install  ## benchmarks in bench/ (ratios against baselines measured in the same run)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

ui: install  ## MLflow UI on 127.0.0.1 (port UI_PORT=5000)
	@echo "MLflow UI: http://127.0.0.1:$(UI_PORT)"
	$(BIN)/mlflow server --backend-store-uri sqlite:///mlflow.db --default-artifact-root ./mlruns \
		--host 127.0.0.1 --port $(UI_PORT) --workers 1

model: install  ## fetch the bundled local LLM into the user cache (once; verified by SHA-256)
	$(BIN)/custseg llm fetch

llm-check: install  ## send one prompt through the configured LLM provider
	$(BIN)/custseg llm check

# The registered champion the agents are grounded in: the pipeline up to export (a no-op when
# it is up to date).
champion: install  ## train and register the model if needed (dvc repro export)
	$(BIN)/python stages/check_params.py
	$(BIN)/custseg mlflow restore
	$(BIN)/dvc repro export

# Broker up, agents, submit eval/tasks.yaml, capture the conversations, stop the agents.
# The expected duration comes first (tasks x the measured time a conversation), then progress.
agents-demo: agents-estimate model champion kafka-up  ## the three agents over Kafka on the sample tasks → data/conversations.jsonl
	@mkdir -p logs
	@export $(ENV_BOOTSTRAP)=$${$(ENV_BOOTSTRAP):-127.0.0.1:$(KAFKA_PORT)}; \
	$(BIN)/custseg agents > logs/agents.log 2>&1 & agents=$$!; \
	trap 'kill $$agents 2>/dev/null; wait $$agents' EXIT; \
	echo "agents running (pid $$agents, log logs/agents.log)"; \
	$(BIN)/custseg submit --ids-out logs/demo-ids.txt >/dev/null && \
	$(BIN)/custseg capture --expect logs/demo-ids.txt --timeout 3600

agents-estimate: install
	@$(BIN)/custseg submit --estimate

# The local Kafka broker (KRaft, 127.0.0.1). KAFKA_PORT is the one port setting: agents-demo and
# the custseg commands use it too. With KAFKA_BOOTSTRAP_SERVERS set, kafka-up starts nothing;
# kafka-down and kafka-status still act on the project's own broker.
# Data and logs: ~/.local/state/custseg/kafka by default.
ENV_BOOTSTRAP := KAFKA_BOOTSTRAP_SERVERS
KAFKA_PORT ?= 9092
KAFKA_CONTROLLER_PORT ?= 9093
KAFKA_CLI = $(BIN)/custseg kafka $(1) --port $(KAFKA_PORT) --controller-port $(KAFKA_CONTROLLER_PORT) \
	$(if $(KAFKA_DATA),--data-dir $(KAFKA_DATA)) $(if $(KAFKA_LOGS),--log-dir $(KAFKA_LOGS))

kafka-up: install  ## start the local Kafka broker (127.0.0.1:9092, or KAFKA_PORT=…)
	@$(call KAFKA_CLI,up)

kafka-down:  ## stop the local Kafka broker (SIGTERM by PID)
	@$(call KAFKA_CLI,down)

kafka-status:  ## is the local Kafka broker running, and at which address
	@$(call KAFKA_CLI,status) || [ $$? -eq 3 ]

# Team mode: one MLflow server on PostgreSQL; clients set MLFLOW_TRACKING_URI=http://127.0.0.1:5010.
TEAM_PG_PORT ?= 5433
TEAM_PORT ?= 5010
TEAM_CLI = $(BIN)/custseg team $(1) --pg-port $(TEAM_PG_PORT) --port $(TEAM_PORT)

team-up: install  ## team MLflow server on PostgreSQL, 127.0.0.1 (needs CUSTSEG_TEAM_DB_PASSWORD; TEAM_PORT=5010)
	@$(call TEAM_CLI,up)

team-down:  ## stop the team MLflow server and its PostgreSQL
	@$(call TEAM_CLI,down)

team-status:  ## is the team server running, and its tracking URL
	@$(call TEAM_CLI,status) || [ $$? -eq 3 ]

SERVE_PORT ?= 5001
serve: install  ## REST scoring of @champion (MLflow's protocol, values checked), 127.0.0.1 (port SERVE_PORT=5001)
	$(BIN)/custseg serve --port $(SERVE_PORT)

app: install  ## Streamlit app on 127.0.0.1 (port APP_PORT=8501; needs a registered model: make run)
	@echo "App: http://127.0.0.1:$(APP_PORT)"
	MLFLOW_UI_URL=$${MLFLOW_UI_URL-http://127.0.0.1:$(UI_PORT)} $(BIN)/streamlit run app/Home.py \
		--server.headless true --server.address 127.0.0.1 --server.port $(APP_PORT) \
		--browser.gatherUsageStats false

clean:  ## remove the local MLflow store and the outputs git does not track (keeps .venv, caches)
	rm -rf mlflow.db mlruns dvc_plots logs data/customers.csv models/*.json models/params.ok

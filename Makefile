# sevenp_pipeline — see README.md. Everything installs from this repository's own files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 3000
# The read-only artifact server of dev/demo (the links in the metadata); empty: PORT + 1.
ARTIFACTS_PORT ?=
export SEVENP_HOME  ?= $(CURDIR)/.sevenp
export DAGSTER_HOME ?= $(SEVENP_HOME)/dagster

.PHONY: install system-deps demo dev stop test test-fast lint bench bench-deploy rerun prune clean \
	deploy rollback deploy-status deploy-stop bench-recovery bench-webhook bench-scale

install: system-deps $(VENV)/.installed

system-deps:
	@scripts/install-system-deps.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## The whole pipeline on the sample app, then the UI (NO_UI=1: print the table and exit).
## FORGE=local: the sample app also reports to a local GitHub-shaped forge (PORT + 3), a pull request
## runs too, and the demo shows the statuses and the comment the forge received.
demo: install
	$(BIN)/python -m sevenp_pipeline.devtools.demo --port $(PORT) $(if $(NO_UI),--no-ui,) \
		$(if $(ARTIFACTS_PORT),--artifacts-port $(ARTIFACTS_PORT),) $(if $(FORGE),--forge $(FORGE),)

## The UI and daemon on the configured apps (apps/*.yaml), without pushing anything
## (with SEVENP_WEBHOOK_SECRET set: the webhook receiver too, on WEBHOOK_PORT, default PORT + 2;
## with SEVENP_DAGSTER_POSTGRES_URL set: the Dagster instance on that PostgreSQL database).
dev: install
	$(BIN)/python -m sevenp_pipeline.devtools.devstack serve --port $(PORT) \
		$(if $(ARTIFACTS_PORT),--artifacts-port $(ARTIFACTS_PORT),) \
		$(if $(WEBHOOK_PORT),--webhook-port $(WEBHOOK_PORT),)

## The local image registry outlives runs (later runs find earlier images); this stops it.
stop: install
	$(BIN)/python -m sevenp_pipeline.devtools.devstack stop-registry

## Re-execute only the failed stages of a run (and what is downstream): make rerun RUN=<run id>
rerun: install
	$(BIN)/python -m sevenp_pipeline.devtools.devstack reexecute $(RUN) --url http://127.0.0.1:$(PORT)

## Deploys, through the running UI (make dev): a person's deploy (the approval of a manual environment),
## a rollback (the last healthy commit before the live one, or TO=<sha>), what runs where, and stopping
## the local environments (their data stays). APP= is needed only when several apps deploy.
deploy: install
	$(BIN)/python -m sevenp_pipeline.devtools.deploy deploy --env $(ENV) --commit $(COMMIT) \
		$(if $(APP),--app $(APP),) --url http://127.0.0.1:$(PORT) $(if $(WAIT),--wait,)

rollback: install
	$(BIN)/python -m sevenp_pipeline.devtools.deploy rollback --env $(ENV) $(if $(TO),--to $(TO),) \
		$(if $(APP),--app $(APP),) --url http://127.0.0.1:$(PORT) $(if $(WAIT),--wait,)

deploy-status: install
	$(BIN)/python -m sevenp_pipeline.devtools.deploy status $(if $(APP),--app $(APP),)

deploy-stop: install
	$(BIN)/python -m sevenp_pipeline.devtools.deploy stop $(if $(APP),--app $(APP),) $(if $(ENV),--env $(ENV),)

## Remove per-commit workspaces nothing needs and stage results unused for a while (also daily,
## workspace_retention_schedule): make prune [KEEP=<commits per branch, default 5>] [CACHE_DAYS=14]
## [BUDGET_GB=<home budget, default 20; 0: none>] [DRY_RUN=1]
prune: install
	$(BIN)/python -m sevenp_pipeline.housekeeping.retention $(if $(KEEP),--keep $(KEEP),) \
		$(if $(CACHE_DAYS),--cache-days $(CACHE_DAYS),) $(if $(BUDGET_GB),--budget-gb $(BUDGET_GB),) \
		$(if $(DRY_RUN),--dry-run,)

test: install
	$(BIN)/python scripts/check_structure.py
	$(BIN)/ruff check sevenp_pipeline sevenp_pipeline_tests benchmarks
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not integration"

lint: install
	$(BIN)/python scripts/check_structure.py
	$(BIN)/ruff check sevenp_pipeline sevenp_pipeline_tests benchmarks

bench: install
	$(BIN)/python benchmarks/pipeline_speed.py
	$(BIN)/python benchmarks/package_stages.py
	$(BIN)/python benchmarks/sandbox_cost.py
	$(BIN)/python benchmarks/build_isolation.py

## Blue-green on the local deploy target under load (podman, nginx): failed requests, switch and rollback times.
bench-deploy: install
	$(BIN)/python benchmarks/deploy_switch.py

## kill -9 of each supervised process (Dagster's, the registry, an environment's nginx, PostgreSQL, Redis):
## seconds until it is back, and the failed requests of an nginx kill under bench-deploy's load.
bench-recovery: install
	$(BIN)/python benchmarks/recovery.py

## push -> run start through a signed webhook delivery vs through the git poll, side by side, one daemon.
bench-webhook: install
	$(BIN)/python benchmarks/webhook_latency.py

## 50 small runs launched at once through the queued coordinator: runs/min, queue wait, launch -> first step,
## with the embedded launcher and the Docker launcher side by side (--launcher embedded|docker|both, --runs N).
## The Docker side starts its own dockerd (needs dockerd and debootstrap, as root) and builds the image;
## SEVENP_TEST_DOCKER_DATA_ROOT=/var/tmp/<folder> keeps the image between invocations.
bench-scale: install
	$(BIN)/python benchmarks/scale_runs.py

clean: stop
	rm -rf $(SEVENP_HOME)

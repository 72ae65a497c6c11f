# The two commands of the README: `make run` and `make test`. Everything else is a helper
# (docs/index.md lists them all).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
UI_PORT ?= 5000

SERVE_PORT ?= 5001

.PHONY: run example test test-fast docs ui serve lint lock repair-store bench bench-quick clean system-packages \
	stack-up stack-down stack-backup worker

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

# Installs pinned by constraints.txt (the versions the tests passed with); pyproject.toml
# keeps the compatible ranges.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

run: $(VENV)/.installed  ## run the pipeline in luigi.toml (extra options: make run ARGS="--set Trainer.seed=3")
	$(BIN)/python src/runner.py $(ARGS)

EXAMPLE ?= ames
example: $(VENV)/.installed-data  ## run examples/$(EXAMPLE)/luigi.toml (ames or penguins), its data made once
	test -f examples/$(EXAMPLE)/input/train.csv || $(BIN)/python scripts/make_example_data.py \
		--dataset $(EXAMPLE) --out examples/$(EXAMPLE)/input
	$(BIN)/python src/runner.py --config examples/$(EXAMPLE)/luigi.toml $(ARGS)

$(VENV)/.installed-data: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[data]"
	touch $@

test: $(VENV)/.installed-dev system-packages  ## every test, the slow end-to-end ones included, on every core
	$(BIN)/python -m pytest -n auto --dist loadgroup $(ARGS)

system-packages:  ## the Debian packages the tests need (PostgreSQL, docker-compose, Chromium), if missing
	bash scripts/install-system-packages.sh

test-fast: $(VENV)/.installed-dev  ## the fast tier: the tests not marked slow
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

# The docs site (mkdocs.yml, docs/) into site/. Nothing is fetched: the theme's fonts are off
# and no plugin reaches the network. NO_MKDOCS_2_WARNING: the theme's banner about its future.
docs: $(VENV)/.installed-dev  ## build the docs site into site/ (offline, --strict)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

# MLflow's background job runner (five more processes importing MLflow) is off: the pages
# need none of it, and it made the first page load several times slower on two cores.
# The address is recorded for the runner's links (.luigiflow/ui_url); every experiment's is printed.
ui: $(VENV)/.installed  ## the MLflow UI on the project's store, at http://127.0.0.1:$(UI_PORT)
	$(BIN)/python scripts/ui.py --port $(UI_PORT)

serve: $(VENV)/.installed  ## serve models:/<model_name>@<alias> of [Register] at http://127.0.0.1:$(SERVE_PORT)
	$(BIN)/python src/serve.py --port $(SERVE_PORT) $(ARGS)

repair-store: $(VENV)/.installed  ## after moving the project folder
	$(BIN)/python src/runner.py --repair-store

bench: $(VENV)/.installed-dev system-packages  ## measure luigiflow against a plain script; writes bench/RESULTS.md
	$(BIN)/python bench/run.py $(ARGS)

bench-quick: $(VENV)/.installed-dev system-packages  ## the benchmark on the example data, once: checks the harness
	$(BIN)/python bench/run.py --quick --work bench/out/quick --results bench/out/quick

lock: $(BIN)/python  ## re-resolve constraints.txt from pyproject.toml's ranges
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet ".[dev]"
	.lock-venv/bin/pip freeze --exclude luigiflow | sort > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .luigiflow site

# The shared stack (docker-compose.yml): PostgreSQL, MLflow's tracking server, luigid.
# Its settings and secrets come from .env.stack (untracked) or the environment; basic auth is
# on when .env.stack says LUIGIFLOW_AUTH=1 (so a later restart cannot drop it), or AUTH=1.
# See docs/team.md.
AUTH ?= $(shell grep -s '^LUIGIFLOW_AUTH=1' .env.stack)
COMPOSE = docker compose -p luigiflow $(if $(wildcard .env.stack),--env-file .env.stack) \
	-f docker-compose.yml $(if $(AUTH),-f docker-compose.auth.yml)

stack-up:  ## start the shared stack (with basic auth when .env.stack says LUIGIFLOW_AUTH=1)
	$(COMPOSE) up -d --build --wait

stack-down:  ## stop the shared stack (its volumes, and so the data, stay)
	$(COMPOSE) down

stack-backup:  ## the database (pg_dump) and the artifacts volume into backups/<date>/
	mkdir -p backups/$$(date +%F)
	$(COMPOSE) exec -T db pg_dump -U mlflow mlflow > backups/$$(date +%F)/mlflow.sql
	docker run --rm -v luigiflow_artifacts:/a -v $(CURDIR)/backups/$$(date +%F):/b \
		debian:bookworm-slim tar czf /b/artifacts.tgz -C /a .

worker: $(VENV)/.installed  ## join run RUN=<id> as a worker, through the shared profile
	$(BIN)/python src/runner.py --profile shared --join $(RUN) $(ARGS)

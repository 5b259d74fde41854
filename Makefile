# Entry points. Each target installs what it needs first, so each works on a fresh machine.
PY      ?= python3
VENV    ?= .venv
LF      := $(VENV)/bin/layerfill
PYTEST  := $(VENV)/bin/pytest
PYTEST_ARGS ?=
# Optional services for `make up` (and everything that depends on it), e.g. UP_FLAGS="--with quay" (CI sets it).
UP_FLAGS ?=

.PHONY: bootstrap up down status demo test test-unit lint compat test-distribution-2.8 faults faults-full soak

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

bootstrap: $(VENV)/.installed

up: bootstrap
	$(LF) devstack up $(UP_FLAGS)

down:
	-$(LF) devstack down

status: bootstrap
	$(LF) devstack status

## The main job on the local stack: pull an image through the proxy cache and watch it become complete.
demo: up
	$(LF) demo

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

compat: bootstrap
	$(LF) schemas check

test-unit: bootstrap
	$(PYTEST) -m unit $(PYTEST_ARGS)

## Everything: lint, schema compatibility, unit, integration and e2e tests against the real local stack.
test: up lint compat
	$(PYTEST) $(PYTEST_ARGS)

## The fault suite alone (CI scale), and at the full counts docs/reliability.md reports.
faults: up
	$(PYTEST) tests/faults $(PYTEST_ARGS)

faults-full: up
	LAYERFILL_FAULTS_FULL=1 $(PYTEST) tests/faults $(PYTEST_ARGS)

## The registry scenarios again with Debian's distribution 2.8.2 as upstream and proxy (the stack is restarted).
test-distribution-2.8: bootstrap
	-$(LF) devstack down
	$(LF) devstack up --distribution 2.8
	$(PYTEST) tests/integration/test_smoke.py tests/e2e/test_offline_pull.py tests/e2e/test_fetcher_upstream_cost.py $(PYTEST_ARGS)

## The soak (docs/reliability.md): 1,000,000 ManifestPulled over 70 minutes through 2 fetchers, 5% new images,
## 1% upstream faults; checks no loss, exactly-once outputs, flat RSS and lag. SOAK_ARGS adds options.
SOAK_ARGS ?=
# The plot is drawn whatever the checks say; the target fails when one failed.
soak: up
	$(VENV)/bin/python -m bench.soak $(SOAK_ARGS); rc=$$?; $(VENV)/bin/python -m bench.plots && exit $$rc

# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-repeat soak lint format bench clean
# Web pages are tested in Debian's chromium (Playwright drives it; no browser download);
# quotas shared by replicas are tested against Debian's redis-server (the tests start it).
CHROMIUM := /usr/bin/chromium
REDIS := /usr/bin/redis-server
# Alert rules are checked and unit-tested with Prometheus's promtool (Debian's prometheus); the
# Kubernetes kustomization is rendered with kubectl's built-in kustomize (Debian's
# kubernetes-client when no kubectl is on the machine).
PROMTOOL := /usr/bin/promtool
KUBECTL := $(shell command -v kubectl || echo /usr/bin/kubectl)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	touch $(STAMP)

PORT ?= 8080
demo: $(STAMP)
	$(BIN)/gateway demo --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench deploy
	$(BIN)/ruff format --check gateway tests bench deploy
	$(BIN)/mypy
	$(BIN)/lint-imports

# The pure core's own tests cover at least this share of it (measured alone, no broker).
CORE_COVERAGE := 85

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

$(REDIS):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server

$(PROMTOOL):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

$(KUBECTL):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client

TOOLS := $(CHROMIUM) $(REDIS) $(PROMTOOL) $(KUBECTL)

# CI's run: the suite in file order (pytest-randomly off), every test under a timeout.
test: lint $(TOOLS)
	$(BIN)/pytest -q -p no:randomly tests/core --cov=gateway.core --cov-fail-under=$(CORE_COVERAGE)
	$(BIN)/pytest -p no:randomly

# The whole suite REPEAT times, each in a new random order (its seed is printed at the top of
# each run: `pytest -p randomly -p "randomly_seed=N"` replays one). A flaky test is a defect.
REPEAT ?= 10
test-repeat: lint $(TOOLS)
	@failed=0; for run in $$(seq $(REPEAT)); do \
	  echo "== run $$run of $(REPEAT)"; \
	  $(BIN)/pytest -q -p no:cacheprovider || failed=$$((failed + 1)); \
	done; \
	echo "test-repeat: $(REPEAT) runs, $$failed failed"; test $$failed -eq 0

# The fault tests with SOAK times the kills and interruptions of `make test`.
SOAK ?= 10
soak: $(STAMP) $(REDIS)
	GATEWAY_TEST_SOAK=$(SOAK) $(BIN)/pytest -p no:randomly -m soak --timeout=0

format: $(STAMP)
	$(BIN)/ruff check --fix gateway tests bench deploy
	$(BIN)/ruff format gateway tests bench deploy

bench: $(STAMP)
	$(BIN)/python -m bench.stream
	$(BIN)/python -m bench.fairness
	$(BIN)/python -m bench.wakes
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.publish
	$(BIN)/python -m bench.legal_pages

clean:
	rm -rf $(VENV) .demo .mypy_cache .pytest_cache .ruff_cache

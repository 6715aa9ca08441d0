# Two commands for a fresh machine: `make up` (whole stack, natively) and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: up down install test lint train evaluate benchmark ps

up:            ## install, migrate, bootstrap data, train if needed, start every service
	bash scripts/up.sh

down:          ## stop what `make up` started
	bash scripts/down.sh

install:       ## .venv + apt packages only
	bash scripts/install.sh

test: install  ## the whole test suite (unit, integration, e2e, browser, validators)
	$(PY) -m pytest

lint:
	.venv/bin/ruff check .

train:
	$(PY) -m src.train

evaluate:
	$(PY) -m src.evaluate --data Data/raw/seed-drgfreeman

benchmark:
	$(PY) benchmarks/predict_latency.py

ps:            ## which native services run
	@for f in .run/*.pid; do [ -f "$$f" ] && n=$$(basename $$f .pid) && \
	  (kill -0 $$(cat $$f) 2>/dev/null && echo "$$n: running (pid $$(cat $$f))" || echo "$$n: stopped"); done; true

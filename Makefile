# Weathervane: `make run` (embedded demo) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
# The built-in simulator listens on the next port, so `make run PORT=9000` needs nothing else
# (WEATHERVANE_SIMULATOR_PORT, from the environment or the command line, overrides it).
WEATHERVANE_SIMULATOR_PORT ?= $(shell expr $(PORT) + 1)
# The scaled pass of `make test` runs against the machine's real services.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/weathervane
TEST_REDIS_URL    ?= redis://127.0.0.1:6379/13

.PHONY: install run scaled-trial test lint test-embedded test-scaled bench browser clean

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# The settings default to production; the demo asks for its own explicitly
# (plain http on loopback, the simulator as a private upstream, debug pages,
# notifications linking to the address it serves).
DEMO   := DEBUG=true WEATHERVANE_PUBLIC_URL=http://$(HOST):$(PORT) WEATHERVANE_SIMULATOR_PORT=$(WEATHERVANE_SIMULATOR_PORT)

run: install
	$(DEMO) $(PY) manage.py migrate --noinput
	$(DEMO) $(PY) manage.py seed_demo --server-url http://$(HOST):$(PORT)
	$(DEMO) $(PY) manage.py serve --host $(HOST) --port $(PORT)

# The whole scaled stack on this machine (PostgreSQL and Redis running here): README "Try it on one machine".
scaled-trial: install
	bash scripts/scaled-trial.sh $(PY)

browser:
	bash scripts/install-chromium.sh

test: install browser lint test-embedded test-scaled

# ruff, configured in pyproject.toml: a lint error fails `make test`.
lint: install
	$(PY) -m ruff check .

# Everything, on the embedded defaults (SQLite, in-memory channel layer).
test-embedded: install
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest -q

# The API and the scaled-mode tests again, on PostgreSQL and Redis.
test-scaled: install
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	  bash scripts/run-scaled-tests.sh $(PY)

bench: install
	bash bench/run.sh

clean:
	rm -rf $(VENV) var

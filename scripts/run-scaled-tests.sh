#!/usr/bin/env bash
# The scaled pass of `make test`: the API tests and every test marked `scaled`
# on PostgreSQL + Redis. Under CI=true a missing server fails the run; locally
# the pass is skipped with a note, so a laptop without PostgreSQL still tests.
set -euo pipefail
PY=${1:-.venv/bin/python}
reachable() { "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$1" 2>/dev/null; }
if ! reachable 5432 || ! reachable 6379; then
  if [[ ${CI:-} == true || ${CI:-} == 1 ]]; then
    echo "scaled tests: PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are required under CI=true" >&2
    exit 1
  fi
  echo "scaled tests skipped: PostgreSQL or Redis is not running on 127.0.0.1" >&2
  exit 0
fi
# A shared database needs one encryption key for every process (the test's subprocesses inherit it).
if [[ -z ${WEATHERVANE_FERNET_KEYS:-} ]]; then
  WEATHERVANE_FERNET_KEYS=$("$PY" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
  export WEATHERVANE_FERNET_KEYS
fi
# pytest-django creates and drops its own test database (test_<name>).
# tests/conftest.py marks the API test modules `scaled`, so they run here too.
exec "$PY" -m pytest -q -m "scaled and not browser" --create-db

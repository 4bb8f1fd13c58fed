#!/usr/bin/env bash
# `make scaled-trial`: the whole scaled stack on one machine, in one command (README "Try it on one machine").
# PostgreSQL and Redis must already run here. Settings come from docs/scaled/trial.env (a variable already in
# the environment wins); secrets are generated once into the data directory. It prepares the database
# (creates it if missing, migrates, collects the static files, writes beat's schedule, seeds the demo
# providers on the simulator with the first user and a gateway key), then runs docs/scaled/Procfile under
# honcho: the simulator, Daphne, the gateway, a Celery worker and beat. Ctrl-C stops them all.
# PROCFILE_RUNNER picks another Procfile runner (e.g. "overmind start -f"); the Procfile path is appended.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
PATH="$(cd "$(dirname "$PY")" && pwd):$PATH"  # python, celery and honcho of the virtualenv
export PATH

# Export each NAME=value line of $1 unless NAME is already set.
load() {
  local line name
  while IFS= read -r line; do
    name=${line%%=*}
    [[ $line == *=* && $name =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
    [[ -n ${!name+set} ]] || export "$name=${line#*=}"
  done < "$1"
}

load docs/scaled/trial.env
export WEATHERVANE_PUBLIC_URL=${WEATHERVANE_PUBLIC_URL:-http://127.0.0.1:$TRIAL_CONTROL_PORT}
export WEATHERVANE_GATEWAY_URL=${WEATHERVANE_GATEWAY_URL:-http://127.0.0.1:$TRIAL_GATEWAY_PORT/v1}
mkdir -p "$WEATHERVANE_DATA_DIR"
secrets="$WEATHERVANE_DATA_DIR/scaled-trial.secrets"
if [[ ! -s $secrets ]]; then
  (umask 077 && python - > "$secrets" <<'EOF'
import secrets
from cryptography.fernet import Fernet
print(f"SECRET_KEY={secrets.token_urlsafe(50)}")
print(f"WEATHERVANE_FERNET_KEYS={Fernet.generate_key().decode()}")
print(f"WEATHERVANE_METRICS_TOKEN={secrets.token_urlsafe(32)}")
EOF
  )
fi
load "$secrets"

python - <<'EOF'
# Create the trial's database on the PostgreSQL server if it does not exist yet.
import os
from urllib.parse import urlsplit, urlunsplit

import psycopg

parts = urlsplit(os.environ["DATABASE_URL"])
name = parts.path.lstrip("/")
try:
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
except psycopg.OperationalError as exc:
    raise SystemExit(f"PostgreSQL at DATABASE_URL does not answer ({exc}); start it first.") from None
EOF
python manage.py migrate --noinput -v0
python manage.py collectstatic --noinput -v0
python manage.py setup_probe_schedule
python manage.py seed_demo --server-url "$WEATHERVANE_PUBLIC_URL"
echo "Scrape /metrics with: Authorization: Bearer <WEATHERVANE_METRICS_TOKEN in $secrets>"
# shellcheck disable=SC2086  # the runner is a command with its options
exec ${PROCFILE_RUNNER:-honcho start -f} docs/scaled/Procfile

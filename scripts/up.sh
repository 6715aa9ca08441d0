#!/usr/bin/env bash
# `make up`: install, prepare PostgreSQL and data, train a first model if none, start every
# service natively in the background (pid files and logs under .run/). Safe to run twice.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bash "$ROOT/scripts/install.sh"
bash "$ROOT/scripts/postgres.sh"

say "creating the database and applying migrations"
"$PY" -m Database_connection create

if [[ ! -d "$ROOT/Data/raw" ]] || [[ -z "$(ls -A "$ROOT/Data/raw" 2>/dev/null)" ]]; then
  say "bootstrapping Data/raw"
  "$PY" -m src.data bootstrap
fi

say "training the first model if none exists"
"$PY" -m src.train --if-missing

for service in "$ROOT"/scripts/services/*.sh; do
  # shellcheck source=/dev/null
  source "$service"
done
say "stack is up; stop it with: make down"

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

# Infrastructure first (S3, Prometheus, MLflow, Airflow: files numbered below 50), so the first
# training run can log to MLflow; then the first model; then the services that serve it.
for service in "$ROOT"/scripts/services/[0-4]*.sh; do
  # shellcheck source=/dev/null
  source "$service"
done

# The first champion goes through the pipeline's own stages and gate (src/splits.py decides what
# may be trained on), exactly like every later retrain; it also versions the base dataset once.
say "training the first champion if the registry has none (extract, preprocess, DVC, train, gate)"
"$PY" -m src.pipeline all --if-no-champion >/dev/null

if [[ ! -f "$ROOT/Data/processed.dvc" ]]; then
  # Version the base dataset once, as a deployment would: later retrains then push only new files.
  say "versioning the base dataset with DVC (first time only)"
  "$PY" -m src.pipeline extract >/dev/null
  "$PY" -m src.pipeline preprocess >/dev/null
  "$PY" -m src.pipeline version
fi

for service in "$ROOT"/scripts/services/[5-9]*.sh; do
  # shellcheck source=/dev/null
  source "$service"
done
say "stack is up; stop it with: make down"

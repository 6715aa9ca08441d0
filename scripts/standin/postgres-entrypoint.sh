#!/usr/bin/env bash
# The part of the upstream postgres image's entrypoint the project uses: initialise an empty
# PGDATA with a password for POSTGRES_USER, run /docker-entrypoint-initdb.d/*.sh|*.sql against
# a server on the socket only, then serve on every interface.
set -euo pipefail
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
export POSTGRES_USER="${POSTGRES_USER:-postgres}"
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "running $f"; bash "$f" ;;
      *.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -f "$f" ;;
      *) ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "database initialised"
fi
if [[ "${1:-}" == postgres ]]; then
  shift
  exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"

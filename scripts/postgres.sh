#!/usr/bin/env bash
# Make sure a PostgreSQL answers on 127.0.0.1:5432: use the machine's server when it is
# reachable, otherwise start a private one under .run/pg from the system's binaries.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if pg_isready -q -h 127.0.0.1 -p 5432; then
  say "PostgreSQL reachable on 127.0.0.1:5432"
  exit 0
fi
bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[[ -x "$bindir/initdb" ]] || die "no PostgreSQL server reachable and no PostgreSQL binaries installed (apt-get install postgresql)"
data="$RUN/pg/data"
as_pg=(); [[ $(id -u) -eq 0 ]] && as_pg=(runuser -u postgres --)
if [[ ! -f "$data/PG_VERSION" ]]; then
  say "initialising a private PostgreSQL in $data"
  mkdir -p "$data"; [[ $(id -u) -eq 0 ]] && chown -R postgres:postgres "$RUN/pg"
  "${as_pg[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust >/dev/null
fi
"${as_pg[@]}" "$bindir/pg_ctl" -D "$data" -l "$RUN/pg/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p 5432 -k $RUN/pg" start
say "private PostgreSQL started on 127.0.0.1:5432"

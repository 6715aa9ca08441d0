#!/usr/bin/env bash
# `make down`: stop what `make up` started, in reverse order.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for pidfile in $(ls -r "$RUN"/*.pid 2>/dev/null); do
  stop_service "$(basename "$pidfile" .pid)"
done
say "stopped"

#!/usr/bin/env bash
# Stops the moto server that start.sh started, by its PID (never by name).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
pidfile="$MOTO_RUN/moto.pid"
[[ -f "$pidfile" ]] || { echo "stop.sh: no moto started by us is running" >&2; exit 0; }
pid="$(cat "$pidfile")"
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$pidfile"
echo "moto (pid $pid) stopped" >&2

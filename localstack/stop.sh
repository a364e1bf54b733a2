#!/usr/bin/env bash
# Stops the LocalStack that start.sh started, by its PID (never by name).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
pidfile="$LOCALSTACK_RUN/localstack.pid"
[[ -f "$pidfile" ]] || { echo "stop.sh: no LocalStack started by us is running" >&2; exit 0; }
pid="$(cat "$pidfile")"
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "stop.sh: pid $pid ignored SIGTERM for 10 s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi
rm -f "$pidfile"
echo "LocalStack (pid $pid) stopped" >&2

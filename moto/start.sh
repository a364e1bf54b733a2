#!/usr/bin/env bash
# Starts moto's server on 127.0.0.1 (installing it first if needed) and waits until it answers.
# Idempotent and safe to call from several processes at once (flock).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
mkdir -p "$MOTO_RUN"
exec 9>"$MOTO_RUN/start.lock"
flock 9

healthy() { curl -fsS --max-time 2 "$MOTO_ENDPOINT/moto-api/" >/dev/null 2>&1; }

pidfile="$MOTO_RUN/moto.pid"
if healthy; then
  exit 0
fi
if ! { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
  "$MOTO_DIR/install.sh"
  log="$MOTO_RUN/moto.log"
  echo "start.sh: starting moto on $MOTO_ENDPOINT (log: $log)" >&2
  setsid "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$log" 2>&1 < /dev/null 9>&- &
  echo $! > "$pidfile"
fi
emulator_wait moto "$MOTO_ENDPOINT" "$pidfile" "$MOTO_RUN/moto.log" 120

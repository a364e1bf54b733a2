#!/usr/bin/env bash
# Starts LocalStack's S3 on 127.0.0.1 without Docker, installing it first if needed, and
# waits until it is healthy. Idempotent: if our LocalStack is already up, it returns at once.
# Safe to call from several processes at once (flock).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
mkdir -p "$LOCALSTACK_RUN"

exec 9>"$LOCALSTACK_RUN/start.lock"
flock 9

# Healthy means the S3 provider is loaded ("running", not merely "available") and answers a
# real S3 request (GET / is ListBuckets); before that, requests can get 501 "no handler".
healthy() {
  curl -fsS --max-time 2 "$LOCALSTACK_ENDPOINT/_localstack/health" 2>/dev/null \
    | grep -qE '"s3": *"running"' \
  && curl -fsS --max-time 2 "$LOCALSTACK_ENDPOINT/" 2>/dev/null \
       -H "Authorization: AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0" \
     | grep -q ListAllMyBucketsResult
}

pidfile="$LOCALSTACK_RUN/localstack.pid"
if healthy; then
  echo "LocalStack already running at $LOCALSTACK_ENDPOINT" >&2
  exit 0
fi
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "start.sh: a LocalStack (pid $(cat "$pidfile")) is running but not healthy; waiting for it" >&2
else
  "$LOCALSTACK_DIR/install.sh"
  log="$LOCALSTACK_RUN/localstack.log"
  echo "start.sh: starting LocalStack on $LOCALSTACK_ENDPOINT (log: $log)" >&2
  # Host mode. The variables are the ones the shared emulator notes found necessary:
  # OVERRIDE_IN_DOCKER=0 because this machine has /.dockerenv, DNS off, no event collection.
  OVERRIDE_IN_DOCKER=0 \
  FILESYSTEM_ROOT="$LOCALSTACK_RUN/fs" \
  SERVICES=s3 \
  EAGER_SERVICE_LOADING=1 \
  GATEWAY_LISTEN="127.0.0.1:$LOCALSTACK_PORT" \
  LOCALSTACK_HOST="127.0.0.1:$LOCALSTACK_PORT" \
  DNS_ADDRESS=0 \
  DISABLE_EVENTS=1 \
  SKIP_SSL_CERT_DOWNLOAD=1 \
  setsid "$LOCALSTACK_VENV/bin/python" -m localstack.runtime.main >"$log" 2>&1 < /dev/null 9>&- &
  echo $! > "$pidfile"
fi

emulator_wait LocalStack "$LOCALSTACK_ENDPOINT" "$pidfile" "$LOCALSTACK_RUN/localstack.log" 240

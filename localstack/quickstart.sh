#!/usr/bin/env bash
# Brings LocalStack up (installing it on first use) and runs examples/quickstart.rs against it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$LOCALSTACK_DIR/start.sh"
cd "$LOCALSTACK_DIR/.."
# LocalStack accepts any credentials; real AWS settings in the environment take precedence.
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export S3STATE_ENDPOINT_URL="${S3STATE_ENDPOINT_URL:-$LOCALSTACK_ENDPOINT}"
export S3STATE_PATH_STYLE="${S3STATE_PATH_STYLE:-true}"
exec cargo run --quiet --example quickstart

#!/usr/bin/env bash
# Installs LocalStack (host mode, no Docker) into a private venv, pinned by constraints.txt.
# Idempotent: a venv whose marker matches the pinned version is left alone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

marker="$LOCALSTACK_VENV/.s3state-installed"
want="localstack-core==$LOCALSTACK_VERSION $(sha256sum "$LOCALSTACK_DIR/constraints.txt" | cut -c1-16)"
emulator_installed "$marker" "$want" && exit 0

emulator_need_python "$LOCALSTACK_PYTHON" S3STATE_LOCALSTACK_PYTHON "a Python 3.11 interpreter"
echo "install.sh: installing LocalStack $LOCALSTACK_VERSION into $LOCALSTACK_VENV (about a minute the first time)" >&2
rm -rf "$LOCALSTACK_VENV"
"$LOCALSTACK_PYTHON" -m venv "$LOCALSTACK_VENV"
"$LOCALSTACK_VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$LOCALSTACK_VENV/bin/pip" install --quiet --disable-pip-version-check \
  -c "$LOCALSTACK_DIR/constraints.txt" \
  "localstack-core[runtime]==$LOCALSTACK_VERSION" cbor2 pyopenssl service_identity
echo "$want" > "$marker"
echo "install.sh: done" >&2

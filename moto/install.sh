#!/usr/bin/env bash
# Installs moto's server (pinned) into a private venv. Idempotent: a venv whose marker matches
# the pinned version is left alone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

marker="$MOTO_VENV/.s3state-installed"
want="moto==$MOTO_VERSION"
emulator_installed "$marker" "$want" && exit 0
emulator_need_python "$MOTO_PYTHON" S3STATE_MOTO_PYTHON "a Python 3 interpreter"
echo "install.sh: installing moto $MOTO_VERSION into $MOTO_VENV" >&2
rm -rf "$MOTO_VENV"
"$MOTO_PYTHON" -m venv "$MOTO_VENV"
# cryptography (a dependency of moto, pinned here) is also the test suite's second, independent
# implementation of OpenTofu's state encryption (tests/encryption/opentofu_envelope.py).
"$MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server,dynamodb]==$MOTO_VERSION" "cryptography==47.0.0"
echo "$want" > "$marker"
echo "install.sh: done" >&2

#!/usr/bin/env bash
# Installs moto's server (pinned) into a private venv. Idempotent: a venv whose marker matches
# the pinned version is left alone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

marker="$MOTO_VENV/.s3state-installed"
want="moto==$MOTO_VERSION"
if [[ -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
  exit 0
fi
command -v "$MOTO_PYTHON" >/dev/null || {
  echo "install.sh: $MOTO_PYTHON not found; set S3STATE_MOTO_PYTHON to a Python 3 interpreter" >&2
  exit 1
}
echo "install.sh: installing moto $MOTO_VERSION into $MOTO_VENV" >&2
rm -rf "$MOTO_VENV"
"$MOTO_PYTHON" -m venv "$MOTO_VENV"
"$MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server,dynamodb]==$MOTO_VERSION"
echo "$want" > "$marker"
echo "install.sh: done" >&2

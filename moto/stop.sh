#!/usr/bin/env bash
# Stops the moto server that start.sh started, by its PID (never by name).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
emulator_stop moto "$MOTO_RUN/moto.pid"

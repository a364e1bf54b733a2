#!/usr/bin/env bash
# Starts SeaweedFS (master, volume, filer and S3 gateway in one `weed server` process) on
# 127.0.0.1, installing it first if needed, and waits until its S3 gateway accepts a write.
# Idempotent: if our SeaweedFS is already up, it returns at once. Safe to call from several
# processes at once (flock). Each fresh start begins with an empty store.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
mkdir -p "$SEAWEEDFS_RUN"

exec 9>"$SEAWEEDFS_RUN/start.lock"
flock 9

healthy() { seaweedfs_healthy "$SEAWEEDFS_ENDPOINT"; }

pidfile="$SEAWEEDFS_RUN/seaweedfs.pid"
log="$SEAWEEDFS_RUN/seaweedfs.log"
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  if healthy; then
    echo "SeaweedFS already running at $SEAWEEDFS_ENDPOINT" >&2
    exit 0
  fi
  echo "start.sh: a SeaweedFS (pid $(cat "$pidfile")) is running but not healthy; waiting for it" >&2
else
  "$SEAWEEDFS_DIR/install.sh"
  data="$SEAWEEDFS_RUN/data"
  rm -rf "$data"
  mkdir -p "$data"
  seaweedfs_identities "$SEAWEEDFS_RUN/s3.json"
  echo "start.sh: starting SeaweedFS $SEAWEEDFS_VERSION on $SEAWEEDFS_ENDPOINT (log: $log)" >&2
  # Every bucket is a collection with volumes of its own, so the volume count is raised and
  # the volume size lowered, or creating the suite's many buckets fails with InternalError
  # ("No writable volumes"). The Iceberg and Lance side servers are off (their default ports
  # could collide); the local sockets go into our run directory, not /tmp.
  setsid "$SEAWEEDFS_WEED" server -dir="$data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$SEAWEEDFS_MASTER_PORT" -volume.port="$SEAWEEDFS_VOLUME_PORT" \
    -filer.port="$SEAWEEDFS_FILER_PORT" -filer.localSocket="$SEAWEEDFS_RUN/filer.sock" \
    -s3 -s3.port="$SEAWEEDFS_PORT" -s3.config="$SEAWEEDFS_RUN/s3.json" \
    -s3.localSocket="$SEAWEEDFS_RUN/s3.sock" -s3.port.iceberg=0 -s3.port.lance=0 \
    -volume.max=4000 -master.volumeSizeLimitMB=16 -master.volumePreallocate=false \
    >"$log" 2>&1 < /dev/null 9>&- &
  echo $! > "$pidfile"
fi

emulator_wait SeaweedFS "$SEAWEEDFS_ENDPOINT" "$pidfile" "$log" 120

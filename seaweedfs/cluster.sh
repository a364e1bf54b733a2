#!/usr/bin/env bash
# SeaweedFS as a distributed store on loopback: one master, two volume servers, one filer and
# one S3 gateway, each a process of its own, for the distributed soak (tests/soak.rs
# --distributed), which kills and restarts a volume server mid-run.
#
#   cluster.sh start            a fresh, empty cluster; waits until S3 accepts a write
#   cluster.sh stop             stops every role, by PID
#   cluster.sh kill-volume N    kills volume server N (1 or 2) with SIGKILL, as a crash would
#   cluster.sh start-volume N   starts volume server N again, on its old data
#
# Its ports differ from seaweedfs/start.sh's, so both can run: S3 on 8533
# (S3STATE_SEAWEEDFS_CLUSTER_PORT), master 9533, volumes 8570 and 8571, filer 9088, each role's
# gRPC on its port + 10000.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

port="${S3STATE_SEAWEEDFS_CLUSTER_PORT:-8533}"
endpoint="http://127.0.0.1:$port"
master=9533 filer=9088
run="$SEAWEEDFS_RUN/cluster"
mkdir -p "$run"

volume_port() { echo $((8569 + $1)); }

# spawn ROLE ARGS...: starts `weed ROLE ARGS...` in its own session, logging to ROLE's log.
spawn() {
  local name="$1"; shift
  setsid "$SEAWEEDFS_WEED" "$@" >"$run/$name.log" 2>&1 < /dev/null &
  echo $! > "$run/$name.pid"
}

start_volume() {
  local n="$1"
  mkdir -p "$run/volume$n"
  spawn "volume$n" volume -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$(volume_port "$n")" \
    -dir="$run/volume$n" -max=2000 -mserver="127.0.0.1:$master"
}

case "${1:-}" in
  start)
    "$SEAWEEDFS_DIR/install.sh"
    "$0" stop 2>/dev/null || true
    rm -rf "$run"
    mkdir -p "$run/master" "$run/filer"
    seaweedfs_identities "$run/s3.json"
    # As in start.sh: small volumes and many of them, since every bucket is a collection.
    spawn master master -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$master" -mdir="$run/master" \
      -volumeSizeLimitMB=16 -volumePreallocate=false
    start_volume 1
    start_volume 2
    spawn filer filer -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$filer" -master="127.0.0.1:$master" \
      -defaultStoreDir="$run/filer" -localSocket="$run/filer.sock" -iam=false
    spawn s3 s3 -ip.bind=127.0.0.1 -port="$port" -filer="127.0.0.1:$filer" -config="$run/s3.json" \
      -localSocket="$run/s3.sock" -port.iceberg=0 -port.lance=0
    for _ in $(seq 1 240); do
      if seaweedfs_healthy "$endpoint"; then
        echo "SeaweedFS cluster is up at $endpoint" >&2
        exit 0
      fi
      for role in master volume1 volume2 filer s3; do
        if ! kill -0 "$(cat "$run/$role.pid")" 2>/dev/null; then
          echo "cluster.sh: $role exited during startup; last lines of its log:" >&2
          tail -n 20 "$run/$role.log" >&2
          "$0" stop
          exit 1
        fi
      done
      sleep 0.5
    done
    echo "cluster.sh: the cluster did not accept a write within 120 s; see $run/*.log" >&2
    "$0" stop
    exit 1
    ;;
  stop)
    # Every role at once: SIGTERM, up to 10 s, then SIGKILL (they may ignore SIGTERM).
    pids=()
    for role in s3 filer volume1 volume2 master; do
      [[ -f "$run/$role.pid" ]] || continue
      pid="$(cat "$run/$role.pid")"
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
      rm -f "$run/$role.pid"
    done
    for _ in $(seq 1 40); do
      alive=()
      for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
      [[ ${#alive[@]} -eq 0 ]] && break
      sleep 0.25
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    echo "SeaweedFS cluster stopped" >&2
    ;;
  kill-volume)
    pid="$(cat "$run/volume$2.pid")"
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$run/volume$2.pid"
    echo "volume server $2 (pid $pid) killed" >&2
    ;;
  start-volume)
    start_volume "$2"
    echo "volume server $2 started (pid $(cat "$run/volume$2.pid"))" >&2
    ;;
  *)
    echo "usage: $0 start|stop|kill-volume N|start-volume N" >&2
    exit 2
    ;;
esac

# Shared helpers for the emulator scripts (localstack/ and moto/). Sourced, not executed.
# Each emulator's env.sh calls `emulator_settings`; its install, start and stop scripts call
# the functions below with their own names, paths and messages.

# emulator_settings PREFIX DIR PORT VERSION: sets PREFIX_DIR, PREFIX_VENV, PREFIX_RUN,
# PREFIX_PORT, PREFIX_PYTHON, PREFIX_VERSION and PREFIX_ENDPOINT. Every path, the port and the
# interpreter can be overridden from the environment with S3STATE_PREFIX_VENV (and _RUN, _PORT,
# _PYTHON) so CI and developers can relocate state.
emulator_settings() {
  local prefix="$1" dir="$2" port="$3" version="$4" name
  printf -v "${prefix}_DIR" '%s' "$dir"
  for name in VENV RUN PORT PYTHON; do
    local override="S3STATE_${prefix}_${name}" default
    case "$name" in
      VENV) default="$dir/.venv" ;;
      RUN) default="$dir/.run" ;;
      PORT) default="$port" ;;
      PYTHON) default="python3.11" ;;
    esac
    printf -v "${prefix}_${name}" '%s' "${!override:-$default}"
  done
  printf -v "${prefix}_VERSION" '%s' "$version"
  local port_var="${prefix}_PORT"
  printf -v "${prefix}_ENDPOINT" '%s' "http://127.0.0.1:${!port_var}"
}

# emulator_installed MARKER WANT: whether the venv's marker already records WANT.
emulator_installed() {
  [[ -f "$1" && "$(cat "$1")" == "$2" ]]
}

# emulator_need_python PYTHON OVERRIDE WHAT: fails (exit 1) unless PYTHON is on the PATH.
emulator_need_python() {
  command -v "$1" >/dev/null || {
    echo "install.sh: $1 not found; set $2 to $3" >&2
    exit 1
  }
}

# emulator_wait NAME ENDPOINT PIDFILE LOG TRIES: polls `healthy` every half second, TRIES
# times; exits 0 once it answers, 1 if the process dies first (showing its log's tail) or it
# never does (the caller's LIMIT text says how long that was).
emulator_wait() {
  local name="$1" endpoint="$2" pidfile="$3" log="$4" tries="$5"
  for _ in $(seq 1 "$tries"); do
    if healthy; then
      echo "$name is up at $endpoint (pid $(cat "$pidfile"))" >&2
      exit 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "start.sh: $name exited during startup; last lines of its log:" >&2
      tail -n 30 "$log" >&2 || true
      rm -f "$pidfile"
      exit 1
    fi
    sleep 0.5
  done
  echo "start.sh: $name did not become healthy within $((tries / 2)) s; see $log" >&2
  exit 1
}

# emulator_stop NAME PIDFILE: stops the process start.sh recorded, by its PID (never by name):
# SIGTERM, then SIGKILL if it is still there after 10 s.
emulator_stop() {
  local name="$1" pidfile="$2" pid
  [[ -f "$pidfile" ]] || { echo "stop.sh: no $name started by us is running" >&2; exit 0; }
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "stop.sh: pid $pid ignored SIGTERM for 10 s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
  echo "$name (pid $pid) stopped" >&2
}

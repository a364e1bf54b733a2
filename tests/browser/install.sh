#!/usr/bin/env bash
# Installs Chromium and its WebDriver from Debian's packages for the web UI's browser tests
# (tests/suite/gateway/ui/), idempotently: nothing is done when both are already there.
# Needs root (CI's machine is root) and Debian's apt. Prints the two paths.
set -euo pipefail
chromium=/usr/bin/chromium
driver=/usr/bin/chromedriver
if [[ ! -x "$chromium" || ! -x "$driver" ]]; then
  # Two installs at once (CI's background step and a developer's shell) would fight over
  # dpkg's lock: take our own first.
  exec 9>/tmp/s3state-browser-install.lock
  flock 9
  if [[ ! -x "$chromium" || ! -x "$driver" ]]; then
    echo "browser/install.sh: installing chromium and chromium-driver from Debian (once)" >&2
    export DEBIAN_FRONTEND=noninteractive
    sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  fi
fi
"$driver" --version >/dev/null || { echo "$driver does not run" >&2; exit 1; }
echo "$chromium"
echo "$driver"

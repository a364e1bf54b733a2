# Shared settings for the SeaweedFS scripts. Sourced, not executed.
# Every path and port can be overridden from the environment so CI and developers can
# relocate state (S3STATE_SEAWEEDFS_VENV, _RUN, _PORT, _PYTHON; the internal ports below).
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/emulator.sh"
emulator_settings SEAWEEDFS "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)" 8333 4.48
# The roles' own ports, chosen to collide with nothing else the suite starts (LocalStack 4566,
# moto 4577) nor with SeaweedFS's defaults (9333, 8080, 8888), which a developer may run.
# Each role also listens on its port + 10000 for gRPC.
SEAWEEDFS_MASTER_PORT="${S3STATE_SEAWEEDFS_MASTER_PORT:-9433}"
SEAWEEDFS_VOLUME_PORT="${S3STATE_SEAWEEDFS_VOLUME_PORT:-8470}"
SEAWEEDFS_FILER_PORT="${S3STATE_SEAWEEDFS_FILER_PORT:-8988}"
SEAWEEDFS_WEED="$SEAWEEDFS_VENV/bin/weed"

# seaweedfs_healthy ENDPOINT: whether the S3 gateway at ENDPOINT accepts a write. The port
# opens seconds before the filer is ready, and until then bucket creation fails; so: create
# the readiness bucket (200, or 409 once it exists) and put an object in it (200), signed
# with the test credentials.
seaweedfs_healthy() {
  local endpoint="$1" code
  code="$(curl -sS --max-time 2 -o /dev/null -w '%{http_code}' -X PUT \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user test:test \
    "$endpoint/s3state-ready" 2>/dev/null)" || return 1
  [[ "$code" == 200 || "$code" == 409 ]] || return 1
  # SeaweedFS checks the payload hash, which curl's signer leaves to the caller.
  curl -fsS --max-time 2 -o /dev/null -X PUT --data-binary ready \
    -H "x-amz-content-sha256: $(printf ready | sha256sum | cut -d' ' -f1)" \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user test:test \
    "$endpoint/s3state-ready/ready" 2>/dev/null
}

# seaweedfs_identities FILE: writes the S3 identities (s3.json), each with every action:
# LocalStack's test credentials, and the ones the secret-hiding tests sign with
# (tests/suite/cli/secrets.rs), whose secret must be a recognisable text.
seaweedfs_identities() {
  cat > "$1" <<'JSON'
{"identities":[
 {"name":"s3state-tests","credentials":[{"accessKey":"test","secretKey":"test"}],"actions":["Admin","Read","List","Tagging","Write"]},
 {"name":"s3state-secrets","credentials":[{"accessKey":"s3state-secrets","secretKey":"supersecret-access-key-value"}],"actions":["Admin","Read","List","Tagging","Write"]}
]}
JSON
}

# Shared settings for the LocalStack scripts. Sourced, not executed.
# Every path can be overridden from the environment so CI and developers can relocate state.
LOCALSTACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOCALSTACK_VENV="${S3STATE_LOCALSTACK_VENV:-$LOCALSTACK_DIR/.venv}"
LOCALSTACK_RUN="${S3STATE_LOCALSTACK_RUN:-$LOCALSTACK_DIR/.run}"
LOCALSTACK_PORT="${S3STATE_LOCALSTACK_PORT:-4566}"
LOCALSTACK_PYTHON="${S3STATE_LOCALSTACK_PYTHON:-python3.11}"
LOCALSTACK_VERSION="4.13.1"
LOCALSTACK_ENDPOINT="http://127.0.0.1:${LOCALSTACK_PORT}"

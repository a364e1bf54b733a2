# Shared settings for the moto scripts (moto's server: DynamoDB and STS for the tests). Sourced.
# Every path can be overridden from the environment, as for LocalStack.
MOTO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MOTO_VENV="${S3STATE_MOTO_VENV:-$MOTO_DIR/.venv}"
MOTO_RUN="${S3STATE_MOTO_RUN:-$MOTO_DIR/.run}"
MOTO_PORT="${S3STATE_MOTO_PORT:-4577}"
MOTO_PYTHON="${S3STATE_MOTO_PYTHON:-python3.11}"
MOTO_VERSION="5.2.5"
MOTO_ENDPOINT="http://127.0.0.1:${MOTO_PORT}"

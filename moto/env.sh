# Shared settings for the moto scripts (moto's server: DynamoDB and STS for the tests). Sourced.
# Every path can be overridden from the environment, as for LocalStack.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/emulator.sh"
emulator_settings MOTO "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)" 4577 5.2.5

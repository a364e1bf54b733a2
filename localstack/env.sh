# Shared settings for the LocalStack scripts. Sourced, not executed.
# Every path can be overridden from the environment so CI and developers can relocate state.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/emulator.sh"
emulator_settings LOCALSTACK "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)" 4566 4.13.1

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

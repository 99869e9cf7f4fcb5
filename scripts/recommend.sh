#!/usr/bin/env bash
# The main job: builds the engine if needed and recommends sessions.
# Arguments are passed to `onerec recommend` (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --quiet --bin onerec
exec target/release/onerec recommend "$@"

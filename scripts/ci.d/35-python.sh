#!/usr/bin/env bash
# The Python package: a fresh virtual environment under target/, `pip install ./python`
# (maturin builds the extension with cargo; python/ is a workspace member, so the build
# reuses target/release), then its pytest suite, which compares it with the onerec CLI on
# the golden fixtures.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
venv=target/py-venv
python3 -m venv --clear "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check pytest
cargo build --release -q --workspace --bins
# In-tree build (pip builds local directories in place): cargo finds the workspace's
# target directory and Cargo.lock.
CARGO_TARGET_DIR="$root/target" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check ./python
ONEREC_BIN="$root/target/release/onerec" "$venv/bin/python" -m pytest -q python/tests

# Environment shared by the test and run scripts (sourced, not executed).
# wgpu silently falls back to GL without this; lavapipe is the Vulkan device in CI.
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg-runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
# Tests that need a GPU adapter fail instead of skipping when this is set.
export ONEREC_REQUIRE_GPU="${ONEREC_REQUIRE_GPU:-1}"

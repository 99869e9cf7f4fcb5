#!/usr/bin/env bash
# The Triton backend inside the real server: installs tritonserver (the nvidia-pytriton wheel)
# and tritonclient into a venv under target/, builds libtriton_onerec.so, lays out a model
# repository (the built-in model, the moe_dec_l2 fixture and the reward_l3 fixture with a
# reward model, CPU instances, dynamic batching), starts tritonserver on free loopback ports,
# runs serving/triton/tests/test_server.py (HTTP and gRPC answers against the CLI's, rewards
# and item lists included, bad requests, mixed batches) and stops the server on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
out=target/triton-ci
venv=target/triton-venv
rm -rf "$out" && mkdir -p "$out"

echo "-- Python packages (pip cache reused)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# Only the server binary and its libraries are used from nvidia-pytriton: not its Python deps.
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps 'nvidia-pytriton==0.7.0'
"$venv/bin/pip" install -q --disable-pip-version-check 'tritonclient[http,grpc]==2.73.0'
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
server="$site/pytriton/tritonserver/bin/tritonserver"
export LD_LIBRARY_PATH="$site/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x "$server" ] || { echo "no tritonserver in the nvidia-pytriton wheel ($server)" >&2; exit 1; }

echo "-- backend and CLI"
# The workspace, not -p: a package alone resolves other features and rebuilds the engine.
cargo build --release -q --workspace --lib --bins
# The built-in model on two CPU instances, the fixtures on one, the reward fixture again with
# reranking and an item list as its config's defaults, and (where a GPU adapter is required,
# as in CI with lavapipe) the moe_dec_l2 fixture again on the wgpu backend.
models=(onerec_default=models/default/model.onerec,instances=2 moe_dec_l2=tests/fixtures/moe_dec_l2
        reward_l3=tests/fixtures/reward_l3 reward_l3_rerank=tests/fixtures/reward_l3,rerank=true,items=6)
wgpu=()
if [ "${ONEREC_REQUIRE_GPU:-0}" = 1 ]; then
    models+=(moe_dec_l2_wgpu=tests/fixtures/moe_dec_l2,backend=wgpu,kv_precision=f32)
    wgpu=(--wgpu)
fi
python3 serving/triton/tests/repo.py "$out" target/release/libtriton_onerec.so "${models[@]}" \
    --max-batch 16 --delay-us 50000 --beam 32 --results 10

# Three free loopback ports, chosen by the kernel.
read -r http_port grpc_port metrics_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

echo "-- tritonserver on 127.0.0.1:$http_port (HTTP), :$grpc_port (gRPC)"
"$server" --model-repository "$out/models" --backend-directory "$out/backends" \
    --http-address 127.0.0.1 --http-port "$http_port" \
    --grpc-address 127.0.0.1 --grpc-port "$grpc_port" \
    --metrics-address 127.0.0.1 --metrics-port "$metrics_port" \
    --disable-auto-complete-config --exit-timeout-secs 5 >"$out/server.log" 2>&1 &
pid=$!
stop() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
trap stop EXIT

for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$http_port/v2/health/ready" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$out/server.log" >&2; echo "tritonserver exited" >&2; exit 1; }
    sleep 0.5
done
curl -sf "http://127.0.0.1:$http_port/v2/health/ready" >/dev/null \
    || { tail -50 "$out/server.log" >&2; echo "tritonserver not ready after 60 s" >&2; exit 1; }

"$venv/bin/python" serving/triton/tests/test_server.py \
    --http "127.0.0.1:$http_port" --grpc "127.0.0.1:$grpc_port" \
    --cli target/release/onerec --fixture tests/fixtures/moe_dec_l2 \
    --reward-fixture tests/fixtures/reward_l3 "${wgpu[@]}" \
    || { tail -30 "$out/server.log" >&2; exit 1; }
# The server must still be up after every bad request.
curl -sf "http://127.0.0.1:$http_port/v2/health/live" >/dev/null || { echo "tritonserver died" >&2; exit 1; }
grep -q '"onerec: Triton backend API' "$out/server.log"

#!/usr/bin/env bash
# Load bench of the Triton backend (not a test): perf_analyzer at concurrency 1, 4 and 16 on
# the built-in model and on a synthetic model, Triton's executed batch sizes (statistics
# extension) for each run, and the same requests through the engine in-process (batches of
# the same size), so the serving overhead is a ratio. Writes target/bench/triton/report.md.
#
#   bash benches/triton/run.sh [small|tiny|medium] [SECONDS_PER_WINDOW]
#
# perf_analyzer averages three windows per concurrency; stabilisation is off
# (--stability-percentage 999) because a shared, loaded machine never passes it.
#
# perf_analyzer: the perf-analyzer wheels on PyPI need glibc 2.38; the tritonclient 2.41.0
# wheel still ships a perf_analyzer binary that runs on older systems (it wants libb64 and
# libcudart, both in the nvidia-pytriton wheel under other names: linked here).
set -euo pipefail
cd "$(dirname "$0")/../.."
preset=${1:-small}
secs=${2:-8}
out=target/bench/triton
venv=target/triton-venv
mkdir -p "$out"

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# Only the server binary and its libraries are used from nvidia-pytriton: not its Python deps.
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps 'nvidia-pytriton==0.7.0'
"$venv/bin/pip" install -q --disable-pip-version-check 'tritonclient[http,grpc]==2.73.0'
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
server="$site/pytriton/tritonserver/bin/tritonserver"
libs="$site/nvidia_pytriton.libs"

pa="$out/pa/tritonclient-2.41.0.data/data/bin/perf_analyzer"
if [ ! -x "$pa" ]; then
    "$venv/bin/pip" download -q --no-deps 'tritonclient==2.41.0' -d "$out/pa"
    (cd "$out/pa" && python3 -m zipfile -e tritonclient-2.41.0-*.whl . && chmod +x "tritonclient-2.41.0.data/data/bin/perf_analyzer")
fi
mkdir -p "$out/pa/lib"
ln -sf "$(ls "$libs"/libb64-*.so.0d)" "$out/pa/lib/libb64.so.0d"
ln -sf "$(ls "$libs"/libcudart-*.so.12*)" "$out/pa/lib/libcudart.so.12"

cargo build --release -q --workspace --lib --bins
cargo build --release -q -p onerec-triton --example triton_inprocess
synth="$out/$preset"
[ -f "$synth/model.safetensors" ] || "$venv/bin/python" benches/triton/synthetic_np.py --preset "$preset" --out "$synth"

# 64 histories of 20 items per model, the same for perf_analyzer and in-process.
"$venv/bin/python" - "$out" "$preset" <<'EOF'
import json, sys
out, preset = sys.argv[1], sys.argv[2]
for name, n in (("onerec_default", 1682), (f"synth_{preset}", {"medium": 100000, "small": 50000, "tiny": 5000}[preset])):
    hist = [[1 + (i * 97 + j * 7919) % n for j in range(20)] for i in range(64)]
    json.dump(hist, open(f"{out}/{name}.histories.json", "w"))
    data = [{"HISTORY": {"content": h, "shape": [len(h)]}, "BEAM": [32], "RESULTS": [10],
             "EXCLUDE": {"content": [0], "shape": [1]}, "EXCLUDE_HISTORY": [False]} for h in hist]
    json.dump({"data": data}, open(f"{out}/{name}.input.json", "w"))
EOF

rm -rf "$out/repo"
python3 serving/triton/tests/repo.py "$out/repo" target/release/libtriton_onerec.so \
    onerec_default=models/default/model.onerec "synth_$preset=$synth" \
    --max-batch 16 --delay-us 1000 --beam 32 --results 10
read -r http_port grpc_port metrics_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
LD_LIBRARY_PATH="$libs" "$server" --model-repository "$out/repo/models" --backend-directory "$out/repo/backends" \
    --http-address 127.0.0.1 --http-port "$http_port" --grpc-address 127.0.0.1 --grpc-port "$grpc_port" \
    --metrics-address 127.0.0.1 --metrics-port "$metrics_port" --disable-auto-complete-config \
    >"$out/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$http_port/v2/health/ready" >/dev/null && break
    sleep 0.5
done

echo "load before: $(uptime)" | tee "$out/runs.txt"
# ONEREC_BENCH_MODELS="synth" measures the synthetic model only (the built-in one takes minutes too).
models=(onerec_default "synth_$preset")
[ "${ONEREC_BENCH_MODELS:-}" = synth ] && models=("synth_$preset")
for model in "${models[@]}"; do
    model_path=models/default/model.onerec
    [ "$model" = onerec_default ] || model_path=$synth
    for c in 1 4 16; do
        # In-process before and after the served run: the machine's load drifts.
        target/release/examples/triton_inprocess "$model_path" "$out/$model.histories.json" \
            --beam 32 --results 10 --batch "$c" --seconds "$secs" >"$out/$model.c$c.inproc0.json"
        curl -sf "http://127.0.0.1:$http_port/v2/models/$model/stats" >"$out/$model.c$c.stats0.json"
        LD_LIBRARY_PATH="$out/pa/lib" "$pa" -m "$model" -u "127.0.0.1:$grpc_port" -i grpc \
            --input-data "$out/$model.input.json" --concurrency-range "$c" \
            --measurement-interval "${secs}000" --max-trials 3 --stability-percentage 999 \
            -f "$out/$model.c$c.csv" >"$out/$model.c$c.pa.txt" 2>&1 \
            || { cat "$out/$model.c$c.pa.txt" >&2; exit 1; }
        curl -sf "http://127.0.0.1:$http_port/v2/models/$model/stats" >"$out/$model.c$c.stats1.json"
        target/release/examples/triton_inprocess "$model_path" "$out/$model.histories.json" \
            --beam 32 --results 10 --batch "$c" --seconds "$secs" >"$out/$model.c$c.inproc1.json"
        echo "$model c=$c done ($(uptime))" | tee -a "$out/runs.txt"
    done
done
"$venv/bin/python" benches/triton/report.py "$out" "$preset" | tee "$out/report.md"

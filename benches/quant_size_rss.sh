#!/usr/bin/env bash
# File sizes and peak resident memory of the model file per dtype, on the quantize
# issue's medium config (random weights; ~860 MB f32 checkpoint + ~1.6 GB of model files
# under target/medium, made at run time, never committed).
#
#   bash benches/quant_size_rss.sh [WORKDIR]    (default target/medium)
#
# Prints, per dtype: file bytes, share of the f32 file, the tool's weight error, and the
# peak RSS (GNU time) of `onerec recommend --beam 128` from that file.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/medium}"
mkdir -p "$dir"
command -v /usr/bin/time >/dev/null || { echo "needs GNU time: apt-get install time" >&2; exit 1; }
cargo build --release -p onerec -p onerec-quantize
[ -f "$dir/ckpt/model.safetensors" ] || python3 benches/synthetic.py --preset medium --out "$dir/ckpt"
# The same deterministic 256-item history as the other side-by-side benches.
history="$(cd benches && python3 -c 'from bench_history import history; print(",".join(map(str, history(100000, 256))))')"
printf "%-5s %14s %8s %10s %14s %12s\n" dtype file_bytes of_f32 w_rel_err peak_rss_kB recommend_s
f32_bytes=""
for d in f32 f16 q8 q4; do
    target/release/onerec-quantize --input "$dir/ckpt" --output "$dir/model.$d" --dtype "$d" --quiet > "$dir/table.$d.txt"
    bytes=$(stat -c %s "$dir/model.$d")
    f32_bytes=${f32_bytes:-$bytes}
    err=$(sed -n 's/.*weights rel.err \(.*\)$/\1/p' "$dir/table.$d.txt")
    target/release/onerec inspect --model "$dir/model.$d" --verify > "$dir/inspect.$d.txt"
    /usr/bin/time -v target/release/onerec recommend --model "$dir/model.$d" --history "$history" \
        --beam 128 --results 5 --backend cpu > "$dir/rec.$d.txt" 2> "$dir/time.$d.txt"
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$dir/time.$d.txt")
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$dir/time.$d.txt")
    printf "%-5s %14s %7.2f%% %10s %14s %12s\n" "$d" "$bytes" "$(awk -v a="$bytes" -v b="$f32_bytes" 'BEGIN { print 100 * a / b }')" "$err" "$rss" "$wall"
done
echo "KV cache at beam 128: $((4 * 2 * 20 * 128 * 512 * 4)) bytes (n_dec_layers x K,V x positions x rows x d x 4)"
echo "best sessions per dtype: $dir/rec.*.txt"

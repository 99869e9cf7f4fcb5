#!/usr/bin/env bash
# The C API from C: builds the library in release and installs it (ffi/install.sh), compiles
# the C test and the C example with the system compiler through pkg-config, runs the test on
# every fixture's goldens and again under valgrind, and checks that the example prints what
# the onerec CLI prints for the same request.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/c-api
bash examples/c/build.sh "$out"

fixtures=(tests/fixtures/dense_l3 tests/fixtures/moe_dec_l2 tests/fixtures/moe_enc_dec_l4 tests/fixtures/pointwise_top1 tests/fixtures/heads_odd)
model_file=models/default/model.onerec
echo "-- C test (golden results, error paths, threads, the ABI 2 calls)"
"$out/test_onerec" --model-file "$model_file" "${fixtures[@]}"

echo "-- C test under valgrind"
# The suppression file covers only the rayon pool threads that outlive main (see it).
valgrind --quiet --suppressions=examples/c/valgrind.supp --leak-check=full \
    --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
    --error-exitcode=1 "$out/test_onerec" --model-file "$model_file" tests/fixtures/heads_odd

echo "-- batches far past memory return a status under a 4 GB address-space limit"
(ulimit -v 4000000 && "$out/test_onerec" --huge-batches "$model_file")

echo "-- nothing on stderr from the GPU probe, even without XDG_RUNTIME_DIR"
env -u XDG_RUNTIME_DIR "$out/recommend" "$model_file" 50,172,181 --backend auto >/dev/null 2>"$out/probe.txt" || true
if grep -q XDG_RUNTIME_DIR "$out/probe.txt"; then
    cat "$out/probe.txt" >&2; echo "the library wrote to stderr" >&2; exit 1
fi

echo "-- the shared library is versioned by the ABI"
abi=$(sed -n 's/^pub const ONEREC_ABI_VERSION: u32 = \([0-9]*\);/\1/p' ffi/src/lib.rs)
readelf -d "$out/prefix/lib/libonerec.so.$abi" | grep "SONAME.*\[libonerec.so.$abi\]" >/dev/null
readelf -d "$out/recommend" | grep "NEEDED.*\[libonerec.so.$abi\]" >/dev/null
[ -f "$out/prefix/lib/cmake/onerec/onerecConfigVersion.cmake" ]

echo "-- C example against the onerec CLI"
cargo build --release -q --workspace --bins
fixture=tests/fixtures/moe_enc_dec_l4
# The history of the fixture's fourth golden request ("history": [...] lines after the
# teacher-forced one).
history=$(grep -o '"history": \[[0-9, ]*\]' "$fixture/golden.json" | sed -n 5p | sed 's/.*\[\(.*\)\]/\1/; s/ //g')
[ -n "$history" ] || { echo "no history found in $fixture/golden.json" >&2; exit 1; }
args=(--beam 16 --results 5 --exclude-history)
"$out/recommend" "$fixture" "$history" "${args[@]}" --backend cpu >"$out/example.txt"
target/release/onerec recommend --model "$fixture" --history "$history" "${args[@]}" --backend cpu >"$out/cli.txt"
cat "$out/example.txt"
diff -u "$out/cli.txt" "$out/example.txt"
[ "$(wc -l <"$out/example.txt")" -eq 6 ] || { echo "expected a header and 5 sessions" >&2; exit 1; }
# Bad input is an error with a message, not a crash.
if "$out/recommend" "$fixture" 1,2,3 --backend cpu 2>"$out/err.txt"; then
    echo "unknown items should fail" >&2; exit 1
fi
grep -q ONEREC_STATUS_UNKNOWN_ITEM "$out/err.txt"
echo "C API: ok"

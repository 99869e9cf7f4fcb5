#!/usr/bin/env bash
# End to end through the real binaries: onerec-quantize writes each dtype from a fixture,
# onerec inspect --verify and onerec recommend read it; bad input exits non-zero and
# leaves no output file. (The library paths are tested in tests/quantize.rs.)
set -euo pipefail
cd "$(dirname "$0")/../.."
# The whole workspace, as test-all.sh built it: selecting packages (-p) resolves other
# features and rebuilds (the C library and the test binary cannot keep two variants).
cargo build --release --workspace --bins 2>&1 | tail -1
q=target/release/onerec-quantize
o=target/release/onerec
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fx=tests/fixtures/moe_dec_l2
history="$(python3 -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["requests"][0]["history"])))' "$fx/golden.json")"
passed=0
fail() { echo "FAIL: $*" >&2; exit 1; }
for d in f32 f16 q8 q4; do
    "$q" --input "$fx" --output "$tmp/m.$d" --dtype "$d" --keep-f16 dec.norm > "$tmp/table.$d" || fail "quantize $d"
    grep -q "wrote $tmp/m.$d" "$tmp/table.$d" || fail "quantize $d: no summary"
    "$o" inspect --model "$tmp/m.$d" --verify | grep -q "verify: OK" || fail "inspect --verify $d"
    "$o" recommend --model "$tmp/m.$d" --history "$history" --backend cpu --json | grep -q '"sessions":\[{' || fail "recommend $d"
    passed=$((passed + 1))
done
# Bad input: non-zero exit, a message, and no file left behind.
if "$q" --input "$tmp/nowhere" --output "$tmp/out.q8" --dtype q8 2> "$tmp/err"; then fail "missing input accepted"; fi
grep -q "error: reading" "$tmp/err" || fail "missing input: $(cat "$tmp/err")"
[ ! -e "$tmp/out.q8" ] || fail "a failed run left an output file"
if "$q" --input "$fx" --output "$tmp/m.q8/inside" --dtype q8 2> "$tmp/err"; then fail "unwritable output accepted"; fi
grep -q "cannot write" "$tmp/err" || fail "unwritable output: $(cat "$tmp/err")"
head -c 1000 "$tmp/m.q8" > "$tmp/cut"
if "$o" inspect --model "$tmp/cut" 2> "$tmp/err"; then fail "truncated file accepted"; fi
grep -q "truncated" "$tmp/err" || fail "truncated file: $(cat "$tmp/err")"
[ "$(ls -A "$tmp" | grep -c '^\.onerec-')" = 0 ] || fail "temporary files left behind"
passed=$((passed + 3))
echo "quantize end-to-end: $passed passed, 0 failed"

#!/usr/bin/env bash
# The C test under AddressSanitizer and UndefinedBehaviorSanitizer (the C side is
# instrumented; the library's allocations go through the sanitizer's malloc), with the
# ABI-version-2 calls on the built-in model file. Leaks are valgrind's job (30-ffi-c.sh):
# the library's rayon pool threads outlive main by design.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/c-api-asan
mkdir -p "$out"
# The library and its pkg-config files, as 30-ffi-c.sh installs them.
[ -e target/c-api/prefix/lib/pkgconfig/onerec-static.pc ] || bash examples/c/build.sh target/c-api
export PKG_CONFIG_PATH="$PWD/target/c-api/prefix/lib/pkgconfig"
src=examples/c
# shellcheck disable=SC2046 # pkg-config output is a word list
cc -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Werror -pedantic $(pkg-config --cflags onerec-static) -o "$out/test_onerec" \
    "$src/test_onerec.c" "$src/test_v2.c" "$src/json.c" $(pkg-config --libs onerec-static) -lpthread -lm
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
"$out/test_onerec" --model-file models/default/model.onerec tests/fixtures/heads_odd tests/fixtures/moe_dec_l2
echo "C API under ASan/UBSan: ok"

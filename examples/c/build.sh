#!/usr/bin/env bash
# Builds the C example and the C test against the library installed by ffi/install.sh,
# through pkg-config: the test links libonerec.a (onerec-static.pc), the example the
# shared library (onerec.pc). Usage: examples/c/build.sh [OUT_DIR] (default target/c-api).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/target/c-api}
mkdir -p "$out" && out=$(cd "$out" && pwd)
bash "$root/ffi/install.sh" "$out/prefix"
export PKG_CONFIG_PATH="$out/prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
cc=${CC:-cc}
cflags=${CFLAGS:--std=c11 -O1 -g -Wall -Wextra -Werror -pedantic}
src="$root/examples/c"
# shellcheck disable=SC2046,SC2086 # pkg-config output and CFLAGS are word lists
$cc $cflags $(pkg-config --cflags onerec-static) -o "$out/test_onerec" \
    "$src/test_onerec.c" "$src/test_v2.c" "$src/json.c" $(pkg-config --libs onerec-static) -lpthread -lm
# shellcheck disable=SC2046,SC2086
$cc $cflags $(pkg-config --cflags onerec) -o "$out/recommend" \
    "$src/recommend.c" $(pkg-config --libs onerec) -Wl,-rpath,"$out/prefix/lib"
echo "built $out/test_onerec and $out/recommend"

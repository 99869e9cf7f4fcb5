#!/usr/bin/env bash
# Builds the C library in release and installs it under PREFIX:
#   PREFIX/include/onerec.h
#   PREFIX/lib/libonerec.a, PREFIX/lib/libonerec.so.N + the link libonerec.so (N = the C ABI
#   version, ONEREC_ABI_VERSION; libonerec.N.dylib + libonerec.dylib on macOS)
#   PREFIX/lib/pkgconfig/onerec.pc (shared) and onerec-static.pc (static)
#   PREFIX/lib/cmake/onerec/onerecConfig.cmake (targets onerec::onerec, onerec::onerec_static)
#   and onerecConfigVersion.cmake
# Usage: ffi/install.sh PREFIX   (Linux, macOS; see docs/C_API.md for Android and iOS)
set -euo pipefail
prefix=${1:?usage: ffi/install.sh PREFIX}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# One build of the three library kinds; rustc also names the system libraries that a
# static link needs (they differ per platform and per enabled backend).
log=$(cargo rustc --release -p onerec-ffi --lib -- --print native-static-libs 2>&1) || { echo "$log" >&2; exit 1; }
native=$(sed -n 's/.*native-static-libs: //p' <<<"$log" | tail -n 1)
[ -n "$native" ] || { echo "$log" >&2; echo "error: rustc did not print the native static libraries" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
abi=$(sed -n 's/^pub const ONEREC_ABI_VERSION: u32 = \([0-9]*\);/\1/p' ffi/src/lib.rs)
[ -n "$abi" ] || { echo "error: no ONEREC_ABI_VERSION in ffi/src/lib.rs" >&2; exit 1; }
case "$(uname -s)" in
    Darwin) built=libonerec.dylib shared=libonerec.$abi.dylib ;;
    *) built=libonerec.so shared=libonerec.so.$abi ;;
esac

mkdir -p "$prefix/include" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/onerec"
prefix=$(cd "$prefix" && pwd)
# Each file is written beside its place and renamed, so a failed install leaves no half file.
put() { # put SRC DEST
    cp "$1" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"
}
out="${CARGO_TARGET_DIR:-target}/release"
put ffi/include/onerec.h "$prefix/include/onerec.h"
put "$out/libonerec.a" "$prefix/lib/libonerec.a"
put "$out/$built" "$prefix/lib/$shared"
# The name programs link with (-lonerec); they record the versioned SONAME.
ln -sfn "$shared" "$prefix/lib/$built"
pc() { # pc NAME LIBS LIBS_PRIVATE
    local tmp="$prefix/lib/pkgconfig/$1.pc.tmp.$$"
    sed -e "s|@PREFIX@|$prefix|" -e "s|@NAME@|$1|" -e "s|@VERSION@|$version|" \
        -e "s|@LIBS@|$2|" -e "s|@LIBS_PRIVATE@|$3|" ffi/onerec.pc.in >"$tmp"
    mv -f "$tmp" "$prefix/lib/pkgconfig/$1.pc"
}
pc onerec '-L${libdir} -lonerec' "$native"
pc onerec-static "\${libdir}/libonerec.a $native" ''
# CMake wants the libraries as a list: "-lm -ldl" becomes "m;dl" ("-framework X" stays one entry).
cmake_libs=$(sed -e 's/-framework /-framework_/g' <<<"$native" | tr ' ' '\n' | sed -e 's/^-l//' -e 's/^-framework_/-framework /' | paste -sd';' -)
tmp="$prefix/lib/cmake/onerec/onerecConfig.cmake.tmp.$$"
sed -e "s|@VERSION@|$version|" -e "s|@SHARED@|$shared|" -e "s|@NATIVE_LIBS@|$cmake_libs|" ffi/onerecConfig.cmake.in >"$tmp"
mv -f "$tmp" "$prefix/lib/cmake/onerec/onerecConfig.cmake"
tmp="$prefix/lib/cmake/onerec/onerecConfigVersion.cmake.tmp.$$"
sed -e "s|@VERSION@|$version|" -e "s|@ABI@|$abi|" ffi/onerecConfigVersion.cmake.in >"$tmp"
mv -f "$tmp" "$prefix/lib/cmake/onerec/onerecConfigVersion.cmake"
echo "installed onerec $version in $prefix"

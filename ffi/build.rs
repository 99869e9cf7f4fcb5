//! Names the shared library for the dynamic linker, versioned by the C ABI: a program
//! linked against `libonerec.so` records `libonerec.so.N` (N = ONEREC_ABI_VERSION in
//! src/lib.rs), so a library with an incompatible ABI is never loaded in its place. Without
//! a SONAME the program would record the whole build path and fail to load elsewhere.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/lib.rs");
    let abi = abi_version();
    match std::env::var("CARGO_CFG_TARGET_OS")
        .unwrap_or_default()
        .as_str()
    {
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libonerec.so.{abi}")
        }
        "macos" | "ios" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libonerec.{abi}.dylib")
        }
        _ => {}
    }
}

/// `N` of `pub const ONEREC_ABI_VERSION: u32 = N;` in src/lib.rs: one place says it.
fn abi_version() -> u32 {
    let src = std::fs::read_to_string("src/lib.rs").expect("ffi/src/lib.rs is readable");
    src.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("pub const ONEREC_ABI_VERSION: u32 = ")
        })
        .and_then(|rest| rest.trim_end_matches(';').trim().parse().ok())
        .expect("ffi/src/lib.rs declares `pub const ONEREC_ABI_VERSION: u32 = N;`")
}

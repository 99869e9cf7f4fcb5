//! Names the shared library for the dynamic linker. Without a SONAME, a program linked
//! against `some/dir/libonerec.so` records that whole path and fails to load elsewhere
//! (on Android always); with it, the program asks for `libonerec.so` on its library path.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    match std::env::var("CARGO_CFG_TARGET_OS")
        .unwrap_or_default()
        .as_str()
    {
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libonerec.so")
        }
        "macos" | "ios" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libonerec.dylib")
        }
        _ => {}
    }
}

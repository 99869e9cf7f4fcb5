//! Keeps the GPU driver stack from writing to the host's stderr (for every face of the
//! engine: the Rust API, the CLI, the C API and Python all enumerate adapters here).
//!
//! Mesa's implicit Vulkan layer `VK_LAYER_MESA_device_select` calls `wl_display_connect`
//! while wgpu enumerates adapters; with `XDG_RUNTIME_DIR` unset or invalid (services,
//! containers, CI, ssh), libwayland-client's default log handler prints
//! "error: XDG_RUNTIME_DIR is invalid or not set in the environment." on stderr, once per
//! enumeration. In exactly that case (where Wayland cannot work for the host either) the
//! library points libwayland-client's log handler at `log` instead. A host with a valid
//! XDG_RUNTIME_DIR keeps its own handler untouched. Changing the environment instead
//! (NODEVICE_SELECT=1) is not safe in a multi-threaded host.

#[cfg(target_os = "linux")]
pub(crate) fn quiet_gpu_probe() {
    use std::ffi::{c_char, c_int, c_void, CStr};
    use std::sync::Once;

    extern "C" {
        fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    }
    const RTLD_NOW: c_int = 2;

    /// `wl_log_func_t` is `void (*)(const char *fmt, va_list)`; the va_list is not read
    /// (the messages that matter have no arguments), so its ABI does not matter here.
    extern "C" fn to_log(fmt: *const c_char, _args: *mut c_void) {
        if !fmt.is_null() {
            let text = unsafe { CStr::from_ptr(fmt) }.to_string_lossy();
            log::debug!(target: "onerec::wayland", "{}", text.trim_end());
        }
    }

    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let valid = std::env::var_os("XDG_RUNTIME_DIR")
            .is_some_and(|d| !d.is_empty() && std::path::Path::new(&d).is_dir());
        if valid {
            return;
        }
        // SAFETY: dlopen/dlsym with NUL-terminated names; the symbol has the documented
        // signature `void wl_log_set_handler_client(wl_log_func_t)`. The handle is kept
        // (never dlclose'd) so the library and the handler stay in place.
        unsafe {
            let lib = dlopen(c"libwayland-client.so.0".as_ptr(), RTLD_NOW);
            if lib.is_null() {
                return; // no Wayland client library: nothing will print
            }
            let set = dlsym(lib, c"wl_log_set_handler_client".as_ptr());
            if !set.is_null() {
                let set: extern "C" fn(extern "C" fn(*const c_char, *mut c_void)) =
                    std::mem::transmute(set);
                set(to_log);
            }
        }
    });
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn quiet_gpu_probe() {}

//! The engine's `log` records go to Triton's log (never straight to stderr).

use crate::sys;
use std::ffi::CString;

struct TritonLog;

fn level(l: log::Level) -> sys::LogLevel {
    match l {
        log::Level::Error => sys::LOG_ERROR,
        log::Level::Warn => sys::LOG_WARN,
        log::Level::Info => sys::LOG_INFO,
        log::Level::Debug | log::Level::Trace => sys::LOG_VERBOSE,
    }
}

impl log::Log for TritonLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // SAFETY: a plain query of Triton's log settings.
        unsafe { sys::TRITONSERVER_LogIsEnabled(level(m.level())) }
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let msg = CString::new(format!("onerec: {}", r.args()).replace('\0', " "));
        let file = CString::new(r.file().unwrap_or("onerec")).unwrap_or_default();
        if let Ok(msg) = msg {
            // SAFETY: valid NUL-terminated strings; Triton copies them.
            let err = unsafe {
                sys::TRITONSERVER_LogMessage(
                    level(r.level()),
                    file.as_ptr(),
                    r.line().unwrap_or(0) as i32,
                    msg.as_ptr(),
                )
            };
            // Nowhere left to report a failure to log.
            if !err.is_null() {
                // SAFETY: we own the returned error.
                unsafe { sys::TRITONSERVER_ErrorDelete(err) };
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the logger once (a host that already set one keeps it).
pub fn install() {
    static LOGGER: TritonLog = TritonLog;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

//! The log callback: the library writes nothing to stderr; its `log` records go to a
//! function the host installs.

use crate::guard;
use crate::status::{onerec_status, FfiError};
use std::ffi::{c_char, c_void, CString};
use std::sync::RwLock;

/// Severity of a log message: one of the ONEREC_LOG_* values (higher is more verbose).
pub type onerec_log_level = u32;
/// Something failed.
pub const ONEREC_LOG_ERROR: onerec_log_level = 1;
/// Something is off but the call goes on (e.g. a GPU was found but is unusable; the CPU serves).
pub const ONEREC_LOG_WARN: onerec_log_level = 2;
/// What the library chose (backend, adapter, cache precision).
pub const ONEREC_LOG_INFO: onerec_log_level = 3;
/// Details for debugging.
pub const ONEREC_LOG_DEBUG: onerec_log_level = 4;
/// Everything, including the GPU runtime's own chatter.
pub const ONEREC_LOG_TRACE: onerec_log_level = 5;

/// A function that receives the library's log messages: `level` is an ONEREC_LOG_* value,
/// `message` a NUL-terminated line (valid only during the call), `user_data` what was given
/// to onerec_log_set(). It may be called from any thread, also from several at once, and
/// must not call back into the library.
pub type onerec_log_callback = Option<
    unsafe extern "C" fn(level: onerec_log_level, message: *const c_char, user_data: *mut c_void),
>;

struct Sink {
    callback: unsafe extern "C" fn(onerec_log_level, *const c_char, *mut c_void),
    user_data: *mut c_void,
    max_level: log::LevelFilter,
}

// SAFETY: the host promises (header text) that the callback and its user_data may be used
// from any thread.
unsafe impl Send for Sink {}
unsafe impl Sync for Sink {}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

struct Forward;

static FORWARD: Forward = Forward;

impl log::Log for Forward {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        let sink = SINK.read().unwrap_or_else(|p| p.into_inner());
        sink.as_ref()
            .is_some_and(|s| metadata.level() <= s.max_level)
    }

    fn log(&self, record: &log::Record) {
        let sink = SINK.read().unwrap_or_else(|p| p.into_inner());
        let Some(s) = sink.as_ref() else { return };
        if record.level() > s.max_level {
            return;
        }
        let level = match record.level() {
            log::Level::Error => ONEREC_LOG_ERROR,
            log::Level::Warn => ONEREC_LOG_WARN,
            log::Level::Info => ONEREC_LOG_INFO,
            log::Level::Debug => ONEREC_LOG_DEBUG,
            log::Level::Trace => ONEREC_LOG_TRACE,
        };
        let text = format!("{}: {}", record.target(), record.args()).replace('\0', "\\0");
        let Ok(text) = CString::new(text) else { return };
        // A panic in a host callback cannot unwind through here (it is C); nothing to catch.
        unsafe { (s.callback)(level, text.as_ptr(), s.user_data) };
    }

    fn flush(&self) {}
}

fn level_filter(level: onerec_log_level) -> Result<log::LevelFilter, FfiError> {
    Ok(match level {
        0 => log::LevelFilter::Off,
        ONEREC_LOG_ERROR => log::LevelFilter::Error,
        ONEREC_LOG_WARN => log::LevelFilter::Warn,
        ONEREC_LOG_INFO => log::LevelFilter::Info,
        ONEREC_LOG_DEBUG => log::LevelFilter::Debug,
        ONEREC_LOG_TRACE => log::LevelFilter::Trace,
        other => {
            return Err(FfiError::new(
                onerec_status::InvalidArgument,
                format!("unknown log level {other} (expected 0 for none or ONEREC_LOG_ERROR..ONEREC_LOG_TRACE: 1..=5)"),
            ))
        }
    })
}

/// Sends the library's log messages up to `max_level` (an ONEREC_LOG_* value; 0 for
/// none) to `callback`, replacing any callback set before. A NULL `callback` stops logging.
/// Without a callback the library logs nothing (it never writes to stderr).
///
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_INVALID_ARGUMENT (unknown level), or
/// ONEREC_STATUS_INTERNAL when the process already has another Rust `log` logger (a host
/// written partly in Rust that installed its own: its logger then receives the messages).
/// Ownership: `user_data` stays the caller's; it must stay valid until the callback is
/// replaced or removed.
/// Thread safety: may be called from any thread; messages being delivered at that moment
/// may still reach the previous callback.
#[no_mangle]
pub unsafe extern "C" fn onerec_log_set(
    callback: onerec_log_callback,
    user_data: *mut c_void,
    max_level: onerec_log_level,
) -> onerec_status {
    guard::status(|| {
        let filter = level_filter(max_level)?;
        // Installed once per process; later calls only swap the sink.
        let ours = (&FORWARD as *const Forward).cast::<()>();
        if log::set_logger(&FORWARD).is_err()
            && !std::ptr::eq((log::logger() as *const dyn log::Log).cast::<()>(), ours)
        {
            return Err(FfiError::new(
                onerec_status::Internal,
                "another `log` logger is installed in this process; it receives onerec's messages",
            ));
        }
        let mut sink = SINK.write().unwrap_or_else(|p| p.into_inner());
        *sink = callback.map(|callback| Sink {
            callback,
            user_data,
            max_level: filter,
        });
        // Records above the level are not even formatted.
        log::set_max_level(if sink.is_some() {
            filter
        } else {
            log::LevelFilter::Off
        });
        Ok(())
    })
}

//! The panic boundary and the pointer checks every exported function goes through.

use crate::status::{clear_last_error, onerec_status, set_last_error, FfiError};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs the body of a status-returning function: a success clears the thread's last
/// error, a failure or a panic sets it.
pub(crate) fn status(body: impl FnOnce() -> Result<(), FfiError>) -> onerec_status {
    // AssertUnwindSafe: after a panic the library only drops or replaces what the body
    // touched (results are rebuilt on every call), so no broken invariant is observed.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            clear_last_error();
            onerec_status::Ok
        }
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(payload) => {
            set_last_error(&panic_message(payload.as_ref()));
            onerec_status::Panic
        }
    }
}

/// Runs the body of a function that returns a value and cannot fail (getters, frees):
/// a panic yields `fallback` and sets the last error.
pub(crate) fn value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        set_last_error(&panic_message(payload.as_ref()));
        fallback
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("internal error (a bug in the onerec library, please report it): {what}")
}

/// A handle or input struct given by pointer.
pub(crate) unsafe fn reference<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, FfiError> {
    if !ptr.is_aligned() {
        return Err(FfiError::new(
            onerec_status::InvalidArgument,
            format!("`{what}` is not a valid pointer (misaligned)"),
        ));
    }
    unsafe { ptr.as_ref() }.ok_or_else(|| null(what))
}

/// An out-parameter; checked before any work so that a bad call does nothing.
pub(crate) fn out<T>(ptr: *mut T, what: &str) -> Result<OutPtr<T>, FfiError> {
    if ptr.is_null() {
        return Err(null(what));
    }
    if !ptr.is_aligned() {
        return Err(FfiError::new(
            onerec_status::InvalidArgument,
            format!("`{what}` is not a valid pointer (misaligned)"),
        ));
    }
    Ok(OutPtr(ptr))
}

/// A checked out-parameter, written once the call has succeeded.
pub(crate) struct OutPtr<T>(*mut T);

impl<T> OutPtr<T> {
    pub unsafe fn write(self, v: T) {
        unsafe { self.0.write(v) }
    }
}

/// A caller-owned array of `len` elements; NULL is allowed only when `len` is 0.
pub(crate) unsafe fn array<'a, T>(
    ptr: *const T,
    len: usize,
    what: &str,
) -> Result<&'a [T], FfiError> {
    if len == 0 {
        return Ok(&[]);
    }
    check_array(ptr, len, what)?;
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A caller-owned writable array of `len` elements; NULL is allowed only when `len` is 0.
pub(crate) unsafe fn array_mut<'a, T>(
    ptr: *mut T,
    len: usize,
    what: &str,
) -> Result<&'a mut [T], FfiError> {
    if len == 0 {
        return Ok(&mut []);
    }
    check_array(ptr, len, what)?;
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

fn check_array<T>(ptr: *const T, len: usize, what: &str) -> Result<(), FfiError> {
    if ptr.is_null() {
        return Err(FfiError::new(
            onerec_status::NullPointer,
            format!("`{what}` is NULL but its length is {len}"),
        ));
    }
    if !ptr.is_aligned() {
        return Err(FfiError::new(
            onerec_status::InvalidArgument,
            format!("`{what}` is not a valid pointer (misaligned)"),
        ));
    }
    if len
        .checked_mul(size_of::<T>())
        .is_none_or(|bytes| bytes > isize::MAX as usize)
    {
        return Err(FfiError::new(
            onerec_status::InvalidArgument,
            format!("`{what}` has an impossible length {len}"),
        ));
    }
    Ok(())
}

pub(crate) fn null(what: &str) -> FfiError {
    FfiError::new(onerec_status::NullPointer, format!("`{what}` is NULL"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last_error() -> String {
        unsafe { CStr::from_ptr(crate::onerec_last_error()) }
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let st = status(|| panic!("boom {}", 7));
        assert_eq!(st, onerec_status::Panic);
        assert!(last_error().contains("boom 7"), "{}", last_error());
        assert_eq!(value(5, || -> i32 { panic!("static message") }), 5);
        assert!(last_error().contains("static message"));
    }

    #[test]
    fn success_clears_the_last_error() {
        assert_eq!(
            status(|| Err(FfiError::new(onerec_status::Busy, "busy"))),
            onerec_status::Busy
        );
        assert_eq!(last_error(), "busy");
        assert_eq!(status(|| Ok(())), onerec_status::Ok);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn arrays_are_checked() {
        let ok: &[u64] = unsafe { array(std::ptr::null(), 0, "x") }.unwrap();
        assert!(ok.is_empty());
        let e = unsafe { array::<u64>(std::ptr::null(), 3, "history") }.unwrap_err();
        assert_eq!(e.status, onerec_status::NullPointer);
        assert!(e.message.contains("`history` is NULL but its length is 3"));
        let buf = [0u64; 2];
        let misaligned = (buf.as_ptr() as *const u8).wrapping_add(1) as *const u64;
        assert_eq!(
            unsafe { array(misaligned, 1, "h") }.unwrap_err().status,
            onerec_status::InvalidArgument
        );
        assert_eq!(
            unsafe { array(buf.as_ptr(), usize::MAX / 4, "h") }
                .unwrap_err()
                .status,
            onerec_status::InvalidArgument
        );
    }
}

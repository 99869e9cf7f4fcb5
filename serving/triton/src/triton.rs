//! Thin safe helpers over Triton's C API: errors both ways, reading a request's inputs,
//! writing a response's outputs, steady-clock timestamps.

use crate::error::ServeError;
use crate::request::{Inputs, RawInput};
use crate::sys;
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

/// A Triton error (owned) → ours, freeing it.
pub fn take(err: sys::Err) -> Result<(), ServeError> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: `err` is a live error object Triton gave us; we own it and free it once.
    let msg = unsafe {
        let m = sys::TRITONSERVER_ErrorMessage(err);
        let s = if m.is_null() {
            "unknown error".to_string()
        } else {
            CStr::from_ptr(m).to_string_lossy().into_owned()
        };
        sys::TRITONSERVER_ErrorDelete(err);
        s
    };
    Err(ServeError::Triton(msg))
}

/// Ours → a new Triton error (the caller or Triton takes ownership).
pub fn new_error(e: &ServeError) -> sys::Err {
    let code = match e {
        _ if e.is_client_error() => sys::ERROR_INVALID_ARG,
        ServeError::Config(_) => sys::ERROR_INVALID_ARG,
        ServeError::Engine(onerec_engine::Error::Io { .. }) => sys::ERROR_NOT_FOUND,
        ServeError::Engine(onerec_engine::Error::Backend { .. }) => sys::ERROR_UNAVAILABLE,
        _ => sys::ERROR_INTERNAL,
    };
    error_with(code, &e.to_string())
}

pub fn error_with(code: sys::ErrorCode, msg: &str) -> sys::Err {
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: a valid NUL-terminated string; Triton copies it.
    unsafe { sys::TRITONSERVER_ErrorNew(code, msg.as_ptr()) }
}

/// A C string Triton owns → an owned Rust string.
///
/// # Safety
/// `p` is null or a valid NUL-terminated string.
pub unsafe fn string(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Nanoseconds of the monotonic clock, the clock Triton's statistics use (steady_clock).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The inputs of one request.
pub struct RequestInputs(pub *mut sys::TRITONBACKEND_Request);

impl Inputs for RequestInputs {
    fn get(&self, name: &str) -> Result<Option<RawInput>, ServeError> {
        let cname = CString::new(name).map_err(|_| ServeError::Internal("input name".into()))?;
        let mut input = ptr::null_mut();
        // SAFETY: the request is live for this execute call; out-parameters are valid.
        let err = unsafe { sys::TRITONBACKEND_RequestInput(self.0, cname.as_ptr(), &mut input) };
        if !err.is_null() || input.is_null() {
            // Not sent (Triton has already checked that required inputs are present).
            let _ = take(err);
            return Ok(None);
        }
        let (mut datatype, mut shape, mut dims, mut bytes, mut buffers) =
            (0, ptr::null(), 0u32, 0u64, 0u32);
        // SAFETY: as above.
        take(unsafe {
            sys::TRITONBACKEND_InputProperties(
                input,
                ptr::null_mut(),
                &mut datatype,
                &mut shape,
                &mut dims,
                &mut bytes,
                &mut buffers,
            )
        })?;
        let shape: Vec<i64> = if dims == 0 || shape.is_null() {
            Vec::new()
        } else {
            // SAFETY: Triton gives `dims` elements at `shape`, alive with the request.
            unsafe { std::slice::from_raw_parts(shape, dims as usize) }.to_vec()
        };
        // The bytes already sit in the server's memory; this copy is bounded by them.
        let mut data = Vec::new();
        data.try_reserve_exact(bytes as usize)
            .map_err(|_| ServeError::Input(format!("input {name}: {bytes} bytes is too large")))?;
        for i in 0..buffers {
            let (mut buf, mut len, mut mem, mut mem_id) =
                (ptr::null::<c_void>(), 0u64, sys::MEMORY_CPU, 0i64);
            // SAFETY: index < buffer count; out-parameters valid.
            take(unsafe {
                sys::TRITONBACKEND_InputBuffer(input, i, &mut buf, &mut len, &mut mem, &mut mem_id)
            })?;
            if mem != sys::MEMORY_CPU && mem != sys::MEMORY_CPU_PINNED {
                return Err(ServeError::Input(format!(
                    "input {name} is in GPU memory: this backend reads inputs from host memory"
                )));
            }
            if len > 0 && !buf.is_null() {
                if data.len() as u64 + len > bytes {
                    return Err(ServeError::Input(format!(
                        "input {name}: buffers hold more than its {bytes} bytes"
                    )));
                }
                // SAFETY: Triton gives `len` readable bytes at `buf`.
                data.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(buf as *const u8, len as usize)
                });
            }
        }
        Ok(Some(RawInput {
            datatype,
            shape,
            data,
        }))
    }
}

/// The names of the outputs a request asked for (Triton fills in every output of the
/// model when the client names none).
pub fn requested_outputs(
    request: *mut sys::TRITONBACKEND_Request,
) -> Result<Vec<String>, ServeError> {
    let mut count = 0u32;
    // SAFETY: live request, valid out-parameter.
    take(unsafe { sys::TRITONBACKEND_RequestOutputCount(request, &mut count) })?;
    let mut names = Vec::with_capacity(count.min(16) as usize);
    for i in 0..count {
        let mut name = ptr::null();
        // SAFETY: index < count.
        take(unsafe { sys::TRITONBACKEND_RequestOutputName(request, i, &mut name) })?;
        // SAFETY: Triton's string, alive with the request.
        names.push(unsafe { string(name) });
    }
    Ok(names)
}

/// Adds one output tensor to `response` and fills it with `data`.
pub fn write_output(
    response: *mut sys::TRITONBACKEND_Response,
    name: &str,
    datatype: sys::DataType,
    shape: &[i64],
    data: &[u8],
) -> Result<(), ServeError> {
    let cname = CString::new(name).map_err(|_| ServeError::Internal("output name".into()))?;
    let mut output = ptr::null_mut();
    // SAFETY: live response; shape has `len` elements.
    take(unsafe {
        sys::TRITONBACKEND_ResponseOutput(
            response,
            &mut output,
            cname.as_ptr(),
            datatype,
            shape.as_ptr(),
            shape.len() as u32,
        )
    })?;
    // Every output needs its buffer, even an empty one (a request with no eligible item
    // answers zero sessions): Triton reads it when it serializes the response.
    let (mut buf, mut mem, mut mem_id) = (ptr::null_mut::<c_void>(), sys::MEMORY_CPU, 0i64);
    // SAFETY: live output; out-parameters valid.
    take(unsafe {
        sys::TRITONBACKEND_OutputBuffer(output, &mut buf, data.len() as u64, &mut mem, &mut mem_id)
    })?;
    if data.is_empty() {
        return Ok(());
    }
    if buf.is_null() || (mem != sys::MEMORY_CPU && mem != sys::MEMORY_CPU_PINNED) {
        return Err(ServeError::Internal(format!(
            "output {name}: Triton gave no host buffer"
        )));
    }
    // SAFETY: Triton gave `data.len()` writable bytes of host memory at `buf`.
    unsafe { ptr::copy_nonoverlapping(data.as_ptr(), buf as *mut u8, data.len()) };
    Ok(())
}

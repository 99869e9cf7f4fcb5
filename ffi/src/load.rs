//! Loading a model from a path, a memory buffer or a file descriptor, with the options
//! of `onerec_model_params`.

use crate::guard;
use crate::model::{
    backend_kind, handle, onerec_model, onerec_model_params, ONEREC_KV_AUTO, ONEREC_KV_F16,
    ONEREC_KV_F32, ONEREC_VERIFY_ALWAYS, ONEREC_VERIFY_AUTO, ONEREC_VERIFY_NEVER,
};
use crate::status::{onerec_status, FfiError, Phase};
use onerec_engine::{Engine, EngineOptions, KvPrecision, Verify, DEFAULT_MEMORY_BUDGET};
use std::path::Path;
use std::sync::Arc;

fn invalid(msg: String) -> FfiError {
    FfiError::new(onerec_status::InvalidArgument, msg)
}

/// The C parameters, checked and converted to the engine's options.
pub(crate) fn options(p: &onerec_model_params) -> Result<EngineOptions, FfiError> {
    let kv = match p.kv_precision {
        ONEREC_KV_AUTO => KvPrecision::Auto,
        ONEREC_KV_F32 => KvPrecision::F32,
        ONEREC_KV_F16 => KvPrecision::F16,
        other => {
            return Err(invalid(format!(
                "unknown kv_precision {other} (expected ONEREC_KV_AUTO, _F32 or _F16: 0..=2)"
            )))
        }
    };
    let verify = match p.verify {
        ONEREC_VERIFY_AUTO => Verify::Auto,
        ONEREC_VERIFY_ALWAYS => Verify::Always,
        ONEREC_VERIFY_NEVER => Verify::Never,
        other => {
            return Err(invalid(format!(
                "unknown verify {other} (expected ONEREC_VERIFY_AUTO, _ALWAYS or _NEVER: 0..=2)"
            )))
        }
    };
    let mut o = EngineOptions::new()
        .backend(backend_kind(p.backend)?)
        .kv_precision(kv)
        .verify(verify)
        .memory_budget(if p.memory_budget == 0 {
            DEFAULT_MEMORY_BUDGET
        } else {
            p.memory_budget
        });
    match p.device_index {
        -1 => {}
        i if i >= 0 => o = o.device(i as usize),
        other => {
            return Err(invalid(format!(
                "device_index {other}: expected -1 or an adapter index"
            )))
        }
    }
    if p.cpu_threads > 0 {
        o = o.threads(p.cpu_threads as usize);
    }
    Ok(o)
}

pub(crate) fn open_path(path: &Path, o: &EngineOptions) -> Result<Engine, FfiError> {
    Engine::open(path, o).map_err(|e| FfiError::engine(e, Phase::Load))
}

fn open_bytes(bytes: Vec<u8>, source: &str, o: &EngineOptions) -> Result<Engine, FfiError> {
    let file = onerec_engine::format::from_blob(
        Arc::new(onerec_engine::tensor::Blob::Owned(bytes)),
        Path::new(source),
    )
    .map_err(|e| FfiError::engine(e, Phase::Load))?;
    Engine::from_model(Arc::new(file), o).map_err(|e| FfiError::engine(e, Phase::Load))
}

/// A zeroed buffer of `len` bytes, or ONEREC_STATUS_OUT_OF_MEMORY instead of an abort.
fn buffer(len: usize) -> Result<Vec<u8>, FfiError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        FfiError::new(
            onerec_status::OutOfMemory,
            format!("cannot allocate {len} bytes for the model"),
        )
    })?;
    v.resize(len, 0);
    Ok(v)
}

/// Loads a model file (made by onerec-quantize; a checkpoint directory cannot come from
/// memory) from the `len` bytes at `data`, and writes a new handle to `*out_model`.
///
/// The bytes are COPIED: the caller may free or reuse `data` as soon as the call returns.
/// (The copy costs the file's size in memory; onerec_model_load() of a path maps the file
/// instead.)
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_INVALID_MODEL (the bytes are not a valid model
/// file), ONEREC_STATUS_OUT_OF_MEMORY, ONEREC_STATUS_BACKEND_UNAVAILABLE,
/// ONEREC_STATUS_INVALID_ARGUMENT, ONEREC_STATUS_NULL_POINTER.
/// Ownership: on success the caller owns `*out_model` (onerec_model_free()); `data` stays
/// the caller's.
/// Thread safety: may be called from any thread.
#[no_mangle]
pub unsafe extern "C" fn onerec_model_load_from_buffer(
    data: *const std::ffi::c_void,
    len: usize,
    params: onerec_model_params,
    out_model: *mut *mut onerec_model,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_model, "out_model")?;
        let bytes = unsafe { guard::array(data.cast::<u8>(), len, "data") }?;
        let options = options(&params)?;
        let mut copy = buffer(bytes.len())?;
        copy.copy_from_slice(bytes);
        let loaded = open_bytes(copy, "<memory buffer>", &options)?;
        unsafe { out.write(handle(loaded)) };
        Ok(())
    })
}

/// Loads a model file stored at bytes `offset .. offset + length` of the open file `fd`
/// (e.g. an uncompressed asset inside an Android APK, from AAsset_openFileDescriptor64),
/// and writes a new handle to `*out_model`. `length` 0 means "to the end of the file".
///
/// The range is read into memory owned by the model (a copy, like
/// onerec_model_load_from_buffer()); the descriptor is neither closed nor moved (reads use
/// pread), and the caller may close it as soon as the call returns.
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_IO (not a readable regular file, or the range
/// is past its end), ONEREC_STATUS_INVALID_MODEL, ONEREC_STATUS_OUT_OF_MEMORY,
/// ONEREC_STATUS_BACKEND_UNAVAILABLE, ONEREC_STATUS_INVALID_ARGUMENT.
/// Ownership: on success the caller owns `*out_model` (onerec_model_free()); `fd` stays
/// the caller's.
/// Thread safety: may be called from any thread (pread does not share the file offset).
#[no_mangle]
pub unsafe extern "C" fn onerec_model_load_from_fd(
    fd: std::ffi::c_int,
    offset: u64,
    length: u64,
    params: onerec_model_params,
    out_model: *mut *mut onerec_model,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_model, "out_model")?;
        let options = options(&params)?;
        let bytes = read_range(fd, offset, length)?;
        let loaded = open_bytes(bytes, &format!("<fd {fd} at {offset}>"), &options)?;
        unsafe { out.write(handle(loaded)) };
        Ok(())
    })
}

#[cfg(unix)]
fn read_range(fd: std::ffi::c_int, offset: u64, length: u64) -> Result<Vec<u8>, FfiError> {
    use std::os::fd::BorrowedFd;
    use std::os::unix::fs::FileExt;
    let io = |msg: String| FfiError::new(onerec_status::Io, msg);
    if fd < 0 {
        return Err(FfiError::new(
            onerec_status::InvalidArgument,
            format!("`fd` {fd} is not a file descriptor"),
        ));
    }
    // A duplicate: dropping the File closes the duplicate, never the caller's descriptor.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let owned = borrowed
        .try_clone_to_owned()
        .map_err(|e| io(format!("fd {fd}: {e}")))?;
    let file = std::fs::File::from(owned);
    let meta = file.metadata().map_err(|e| io(format!("fd {fd}: {e}")))?;
    if !meta.is_file() {
        // A pipe or socket would block or cannot be read at an offset.
        return Err(io(format!("fd {fd} is not a regular file")));
    }
    let size = meta.len();
    let end = if length == 0 {
        size
    } else {
        offset.saturating_add(length)
    };
    if offset > size || end > size || end <= offset {
        return Err(io(format!(
            "fd {fd}: bytes {offset}..{end} are not inside the file ({size} bytes)"
        )));
    }
    let len = usize::try_from(end - offset).map_err(|_| {
        io(format!(
            "fd {fd}: {} bytes do not fit in memory",
            end - offset
        ))
    })?;
    let mut bytes = buffer(len)?;
    file.read_exact_at(&mut bytes, offset)
        .map_err(|e| io(format!("fd {fd}: reading {len} bytes at {offset}: {e}")))?;
    Ok(bytes)
}

#[cfg(not(unix))]
fn read_range(fd: std::ffi::c_int, _offset: u64, _length: u64) -> Result<Vec<u8>, FfiError> {
    Err(FfiError::new(
        onerec_status::InvalidArgument,
        format!("fd {fd}: loading from a file descriptor is supported on Unix only"),
    ))
}

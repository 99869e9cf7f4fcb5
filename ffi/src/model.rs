//! The model handle: loaded once, shared by every thread and context.

use crate::guard;
use crate::status::{onerec_status, FfiError, Phase};
use onerec_engine::{BackendKind, Engine, MAX_BEAM};
use std::ffi::{c_char, CStr, CString};
use std::path::PathBuf;
use std::sync::Arc;

/// Which backend runs the model: one of the ONEREC_BACKEND_* values. An integer rather
/// than an enum so that any value a caller passes is checked, not undefined.
pub type onerec_backend = u32;
/// A GPU backend when one is built in and usable, else the CPU.
pub const ONEREC_BACKEND_AUTO: onerec_backend = 0;
/// The CPU reference backend; always available.
pub const ONEREC_BACKEND_CPU: onerec_backend = 1;
/// The portable GPU backend (wgpu: Vulkan, Metal, DX12).
pub const ONEREC_BACKEND_WGPU: onerec_backend = 2;
/// The NVIDIA CUDA backend (in libraries built with `--features cuda`; servers).
pub const ONEREC_BACKEND_CUDA: onerec_backend = 3;

/// A loaded model (weights, catalog and backend). Immutable after loading.
///
/// Thread safety: one model may be used by any number of threads at once; every function
/// that takes a `const onerec_model *` is thread-safe.
pub struct onerec_model {
    pub(crate) engine: Arc<Engine>,
    backend_name: CString,
}

/// How to load a model. Get one from onerec_model_default_params() and change the
/// fields you need, so that fields added later keep their defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct onerec_model_params {
    /// One of the ONEREC_BACKEND_* values.
    pub backend: onerec_backend,
}

/// Facts about a loaded model.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct onerec_model_info {
    /// Items in each recommended session (1 in point-wise mode).
    pub session_len: usize,
    /// Codes per semantic ID (`L`); a session's SIDs hold session_len * n_levels codes.
    pub n_levels: usize,
    /// Codes per level (`K`).
    pub codebook_size: usize,
    /// History items the encoder reads (older items only count for exclusion).
    pub max_history: usize,
    /// Items in the serving catalog, removed ones included: the only ids a history can hold.
    pub n_items: usize,
    /// The largest beam width a request may ask for.
    pub max_beam: usize,
}

/// Returns the default load parameters: ONEREC_BACKEND_AUTO.
///
/// Ownership: returned by value; nothing to free.
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn onerec_model_default_params() -> onerec_model_params {
    onerec_model_params {
        backend: ONEREC_BACKEND_AUTO,
    }
}

fn backend_kind(b: onerec_backend) -> Result<BackendKind, FfiError> {
    match b {
        ONEREC_BACKEND_AUTO => Ok(BackendKind::Auto),
        ONEREC_BACKEND_CPU => Ok(BackendKind::Cpu),
        ONEREC_BACKEND_WGPU => Ok(BackendKind::Wgpu),
        ONEREC_BACKEND_CUDA => Ok(BackendKind::Cuda),
        other => Err(FfiError::new(
            onerec_status::InvalidArgument,
            format!("unknown backend {other} (expected ONEREC_BACKEND_AUTO, _CPU, _WGPU or _CUDA: 0..=3)"),
        )),
    }
}

pub(crate) fn path_of(path: &CStr) -> Result<PathBuf, FfiError> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes())))
    }
    #[cfg(not(unix))]
    {
        path.to_str()
            .map(PathBuf::from)
            .map_err(|_| FfiError::new(onerec_status::InvalidArgument, "`path` is not valid UTF-8"))
    }
}

/// Loads a model (a checkpoint directory or a model file) on the backend named in
/// `params`, and writes a new handle to `*out_model`.
///
/// Arguments: `path` is a NUL-terminated path (bytes on Unix, UTF-8 on Windows);
/// `out_model` must not be NULL.
/// Returns ONEREC_STATUS_OK, or ONEREC_STATUS_IO (cannot read `path`),
/// ONEREC_STATUS_INVALID_MODEL, ONEREC_STATUS_BACKEND_UNAVAILABLE,
/// ONEREC_STATUS_INVALID_ARGUMENT (bad backend value), ONEREC_STATUS_NULL_POINTER.
/// Ownership: on success the caller owns `*out_model` and releases it with
/// onerec_model_free(); on failure `*out_model` is left unchanged.
/// Thread safety: may be called from any thread; loading several models at once is fine.
#[no_mangle]
pub unsafe extern "C" fn onerec_model_load(
    path: *const c_char,
    params: onerec_model_params,
    out_model: *mut *mut onerec_model,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_model, "out_model")?;
        if path.is_null() {
            return Err(guard::null("path"));
        }
        let path = path_of(unsafe { CStr::from_ptr(path) })?;
        let backend = backend_kind(params.backend)?;
        let engine = Engine::load(&path, backend).map_err(|e| FfiError::engine(e, Phase::Load))?;
        let backend_name =
            CString::new(engine.describe_backend().replace('\0', " ")).unwrap_or_default();
        let model = Box::new(onerec_model {
            engine: Arc::new(engine),
            backend_name,
        });
        unsafe { out.write(Box::into_raw(model)) };
        Ok(())
    })
}

/// Releases a model handle. NULL is ignored.
///
/// Contexts created from the model keep what they need alive, so the model may be freed
/// before them; the weights are released when the last context is freed too.
/// Ownership: `model` must come from onerec_model_load() and must not be used or freed
/// again afterwards.
/// Thread safety: no other thread may use this `model` pointer during or after the call.
#[no_mangle]
pub unsafe extern "C" fn onerec_model_free(model: *mut onerec_model) {
    guard::value((), || {
        if !model.is_null() {
            drop(unsafe { Box::from_raw(model) });
        }
    })
}

/// Writes facts about `model` (session length, levels, catalog size, limits) to `*out_info`.
///
/// Returns ONEREC_STATUS_OK or ONEREC_STATUS_NULL_POINTER.
/// Ownership: `*out_info` is a plain struct the caller owns; nothing to free.
/// Thread safety: thread-safe.
#[no_mangle]
pub unsafe extern "C" fn onerec_model_get_info(
    model: *const onerec_model,
    out_info: *mut onerec_model_info,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_info, "out_info")?;
        let model = unsafe { guard::reference(model, "model") }?;
        let cfg = model.engine.config();
        let info = onerec_model_info {
            session_len: cfg.session_len,
            n_levels: cfg.n_levels,
            codebook_size: cfg.codebook_size,
            max_history: cfg.max_history,
            n_items: model.engine.catalog().catalog().len(),
            max_beam: MAX_BEAM,
        };
        unsafe { out.write(info) };
        Ok(())
    })
}

/// Returns a NUL-terminated description of the backend that runs `model`
/// (e.g. "cpu (4 threads)"; the GPU backends name their adapter), or NULL when `model` is NULL.
///
/// Ownership: the string belongs to the model and lives as long as the model handle;
/// never free it.
/// Thread safety: thread-safe.
#[no_mangle]
pub unsafe extern "C" fn onerec_model_backend_name(model: *const onerec_model) -> *const c_char {
    guard::value(std::ptr::null(), || {
        match unsafe { guard::reference(model, "model") } {
            Ok(m) => m.backend_name.as_ptr(),
            Err(_) => std::ptr::null(),
        }
    })
}

//! `libtriton_onerec.so`: the OneRec engine as a Triton Inference Server backend.
//!
//! A model (`backend: "onerec"` in its `config.pbtxt`) opens its model file once; each
//! model instance (instance groups give several) holds one `Engine` over it. The requests
//! Triton's dynamic batcher hands to one execute call are decoded as one engine batch, and
//! every request gets its own response and its own error (docs/SERVING.md).
//!
//! Every exported function runs inside `catch_unwind`: no panic crosses into Triton. They
//! are `unsafe` for Rust callers: Triton passes the live objects they dereference.

mod error;
mod logger;
pub mod outputs;
pub mod request;
pub mod serve;
pub mod settings;
mod sys;
mod triton;

pub use error::ServeError;

use onerec_engine::backend::wgpu::{find_adapter, WgpuOptions};
use onerec_engine::{BackendKind, Engine, ModelFile, Response, WgpuBackend};
use settings::{KvPrecision, Settings};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr;
use std::sync::Arc;
use triton::{error_with, new_error, take};

/// What a model holds for its instances: its settings and the opened model file.
struct ModelState {
    name: String,
    settings: Settings,
    file: Arc<ModelFile>,
}

/// One instance: one engine.
struct InstanceState {
    model: Arc<ModelState>,
    engine: Engine,
}

/// Runs `f`, turning an error or a panic into a Triton error.
fn guard(what: &str, f: impl FnOnce() -> Result<(), ServeError>) -> sys::Err {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => ptr::null_mut(),
        Ok(Err(e)) => {
            log::error!("{what}: {e}");
            new_error(&e)
        }
        Err(_) => error_with(
            sys::ERROR_INTERNAL,
            &format!("onerec backend: {what} panicked"),
        ),
    }
}

/// # Safety
/// Called by Triton, with the live objects of its backend API.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_Initialize(
    _backend: *mut sys::TRITONBACKEND_Backend,
) -> sys::Err {
    guard("backend initialize", || {
        logger::install();
        let (mut major, mut minor) = (0u32, 0u32);
        // SAFETY: valid out-parameters.
        take(unsafe { sys::TRITONBACKEND_ApiVersion(&mut major, &mut minor) })?;
        log::info!(
            "Triton backend API {major}.{minor}; this backend needs {}.{}",
            sys::API_VERSION_MAJOR,
            sys::API_VERSION_MINOR
        );
        if major != sys::API_VERSION_MAJOR || minor < sys::API_VERSION_MINOR {
            return Err(ServeError::Triton(format!(
                "the server's backend API is {major}.{minor}; this backend needs {}.{} or a newer {}.x",
                sys::API_VERSION_MAJOR,
                sys::API_VERSION_MINOR,
                sys::API_VERSION_MAJOR
            )));
        }
        Ok(())
    })
}

/// # Safety
/// Called by Triton, with the live objects of its backend API.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_Finalize(
    _backend: *mut sys::TRITONBACKEND_Backend,
) -> sys::Err {
    ptr::null_mut()
}

fn model_initialize(model: *mut sys::TRITONBACKEND_Model) -> Result<(), ServeError> {
    let (mut name, mut version) = (ptr::null(), 0u64);
    // SAFETY: live model; valid out-parameters; strings owned by Triton.
    take(unsafe { sys::TRITONBACKEND_ModelName(model, &mut name) })?;
    take(unsafe { sys::TRITONBACKEND_ModelVersion(model, &mut version) })?;
    let name = unsafe { triton::string(name) };
    let (mut kind, mut location) = (0, ptr::null());
    take(unsafe { sys::TRITONBACKEND_ModelRepository(model, &mut kind, &mut location) })?;
    if kind != sys::ARTIFACT_FILESYSTEM {
        return Err(ServeError::Config(
            "model artifacts must be on a filesystem".into(),
        ));
    }
    let location = unsafe { triton::string(location) };
    let mut message = ptr::null_mut();
    take(unsafe { sys::TRITONBACKEND_ModelConfig(model, 1, &mut message) })?;
    let (mut base, mut size) = (ptr::null(), 0usize);
    let json =
        take(unsafe { sys::TRITONSERVER_MessageSerializeToJson(message, &mut base, &mut size) })
            .map(|()| {
                // SAFETY: Triton gives `size` bytes at `base`, alive with the message.
                String::from_utf8_lossy(unsafe {
                    std::slice::from_raw_parts(base as *const u8, size)
                })
                .into_owned()
            });
    let _ = take(unsafe { sys::TRITONSERVER_MessageDelete(message) });
    // `location` is the model's folder; the files sit in its version folder.
    let settings = Settings::from_config(&json?, &Path::new(&location).join(version.to_string()))?;
    let file = Arc::new(ModelFile::open(&settings.model_path)?);
    settings.check_model(&file.config)?;
    log::info!(
        "model {name} version {version}: {} ({} items)",
        settings.model_path.display(),
        file.catalog.len()
    );
    let state = Box::new(Arc::new(ModelState {
        name,
        settings,
        file,
    }));
    let raw = Box::into_raw(state) as *mut c_void;
    // SAFETY: live model; on failure we take the box back.
    if let Err(e) = take(unsafe { sys::TRITONBACKEND_ModelSetState(model, raw) }) {
        drop(unsafe { Box::from_raw(raw as *mut Arc<ModelState>) });
        return Err(e);
    }
    Ok(())
}

/// # Safety
/// Called by Triton, with the live objects of its backend API.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInitialize(
    model: *mut sys::TRITONBACKEND_Model,
) -> sys::Err {
    guard("model initialize", || model_initialize(model))
}

/// # Safety
/// Called by Triton, with the live objects of its backend API.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelFinalize(
    model: *mut sys::TRITONBACKEND_Model,
) -> sys::Err {
    guard("model finalize", || {
        let mut raw = ptr::null_mut();
        // SAFETY: live model; the state is the box we set (or null).
        take(unsafe { sys::TRITONBACKEND_ModelState(model, &mut raw) })?;
        if !raw.is_null() {
            drop(unsafe { Box::from_raw(raw as *mut Arc<ModelState>) });
        }
        Ok(())
    })
}

/// The engine of one instance: the `backend` parameter, or the instance group's kind.
fn make_engine(m: &ModelState, gpu_group: bool) -> Result<Engine, ServeError> {
    let s = &m.settings;
    let kind = s.backend.unwrap_or(if gpu_group {
        BackendKind::Auto
    } else {
        BackendKind::Cpu
    });
    let file = m.file.clone();
    let engine = match (kind, s.kv) {
        (_, KvPrecision::Auto) => Engine::from_file(file, kind)?,
        (BackendKind::Wgpu | BackendKind::Auto, kv) => {
            let mut opts = WgpuOptions::from_env()?;
            opts.kv_f32 = kv == KvPrecision::F32;
            let adapter = find_adapter().ok_or_else(|| {
                ServeError::Config("kv_precision is set for a GPU but no GPU adapter is usable".into())
            })?;
            Engine::with_backend(file, WgpuBackend::from_adapter(adapter, opts)?)?
        }
        (BackendKind::Cpu, KvPrecision::F32) => Engine::from_file(file, kind)?,
        (BackendKind::Cpu, KvPrecision::F16) => {
            return Err(ServeError::Config(
                "kv_precision f16: the CPU backend keeps its KV cache in f32".into(),
            ))
        }
        (BackendKind::Cuda, _) => {
            return Err(ServeError::Config(
                "kv_precision with the cuda backend: set ONEREC_CUDA_KV=f16|f32 in the server's environment instead".into(),
            ))
        }
    };
    Ok(engine)
}

fn instance_initialize(instance: *mut sys::TRITONBACKEND_ModelInstance) -> Result<(), ServeError> {
    let (mut model, mut kind, mut name) = (ptr::null_mut(), 0, ptr::null());
    // SAFETY: live instance; valid out-parameters.
    take(unsafe { sys::TRITONBACKEND_ModelInstanceModel(instance, &mut model) })?;
    take(unsafe { sys::TRITONBACKEND_ModelInstanceKind(instance, &mut kind) })?;
    take(unsafe { sys::TRITONBACKEND_ModelInstanceName(instance, &mut name) })?;
    let name = unsafe { triton::string(name) };
    let mut raw = ptr::null_mut();
    take(unsafe { sys::TRITONBACKEND_ModelState(model, &mut raw) })?;
    if raw.is_null() {
        return Err(ServeError::Internal("model state missing".into()));
    }
    // SAFETY: the model state is the `Arc<ModelState>` box set in model_initialize, alive
    // until model_finalize, which Triton calls after every instance is finalized.
    let model_state = unsafe { &*(raw as *const Arc<ModelState>) }.clone();
    let engine = make_engine(&model_state, kind == sys::INSTANCEGROUPKIND_GPU)?;
    log::info!(
        "instance {name} of {}: {}",
        model_state.name,
        engine.describe_backend()
    );
    let raw = Box::into_raw(Box::new(InstanceState {
        model: model_state,
        engine,
    })) as *mut c_void;
    if let Err(e) = take(unsafe { sys::TRITONBACKEND_ModelInstanceSetState(instance, raw) }) {
        drop(unsafe { Box::from_raw(raw as *mut InstanceState) });
        return Err(e);
    }
    Ok(())
}

/// # Safety
/// Called by Triton, with the live objects of its backend API.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceInitialize(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
) -> sys::Err {
    guard("instance initialize", || instance_initialize(instance))
}

/// # Safety
/// Called by Triton, with the live objects of its backend API.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceFinalize(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
) -> sys::Err {
    guard("instance finalize", || {
        let mut raw = ptr::null_mut();
        // SAFETY: live instance; the state is the box we set (or null).
        take(unsafe { sys::TRITONBACKEND_ModelInstanceState(instance, &mut raw) })?;
        if !raw.is_null() {
            drop(unsafe { Box::from_raw(raw as *mut InstanceState) });
        }
        Ok(())
    })
}

/// Creates, fills and sends the response of one request.
fn respond(
    request: *mut sys::TRITONBACKEND_Request,
    result: Result<Response, ServeError>,
    st: &InstanceState,
) -> bool {
    let mut response = ptr::null_mut();
    // SAFETY: live request.
    if let Err(e) = take(unsafe { sys::TRITONBACKEND_ResponseNew(&mut response, request) }) {
        log::error!("cannot create a response: {e}");
        return false;
    }
    let cfg = st.engine.config();
    let dims = outputs::Dims {
        session_len: cfg.session_len,
        levels: cfg.n_levels,
        signals: cfg.reward.as_ref().map_or(0, |r| r.signals.len()),
    };
    let written = result.and_then(|r| {
        let wanted = triton::requested_outputs(request)?;
        for t in outputs::outputs(&r, &st.model.settings, dims, &wanted)? {
            triton::write_output(response, t.name, t.datatype, &t.shape, &t.data)?;
        }
        Ok(())
    });
    let err = match &written {
        Ok(()) => ptr::null_mut(),
        Err(e) => new_error(e),
    };
    // SAFETY: live response; Triton takes the response, not the error.
    let sent = take(unsafe {
        sys::TRITONBACKEND_ResponseSend(response, sys::RESPONSE_COMPLETE_FINAL, err)
    });
    if !err.is_null() {
        unsafe { sys::TRITONSERVER_ErrorDelete(err) };
    }
    if let Err(e) = sent {
        log::error!("cannot send a response: {e}");
        return false;
    }
    written.is_ok()
}

/// # Safety
/// Called by Triton, with the live objects of its backend API.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceExecute(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
    requests: *mut *mut sys::TRITONBACKEND_Request,
    request_count: u32,
) -> sys::Err {
    let exec_start = triton::now_ns();
    let mut raw = ptr::null_mut();
    // SAFETY: live instance.
    if let Err(e) = take(unsafe { sys::TRITONBACKEND_ModelInstanceState(instance, &mut raw) }) {
        // Nothing answered or released yet: Triton answers every request with this error.
        return new_error(&e);
    }
    if raw.is_null() || (requests.is_null() && request_count > 0) {
        return error_with(sys::ERROR_INTERNAL, "onerec backend: no instance state");
    }
    // SAFETY: set in instance_initialize, alive until instance finalize.
    let st = unsafe { &*(raw as *const InstanceState) };
    // SAFETY: Triton passes `request_count` live requests.
    let requests: &[*mut sys::TRITONBACKEND_Request] = if request_count == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(requests, request_count as usize) }
    };

    let mut compute = (exec_start, exec_start);
    let results = catch_unwind(AssertUnwindSafe(|| {
        let s = &st.model.settings;
        let parsed: Vec<_> = requests
            .iter()
            .map(|&r| request::build(&triton::RequestInputs(r), s))
            .collect();
        compute.0 = triton::now_ns();
        let out = serve::serve(&st.engine, s.max_beam, parsed);
        compute.1 = triton::now_ns();
        out
    }))
    .unwrap_or_else(|_| {
        requests
            .iter()
            .map(|_| Err(ServeError::Internal("the backend panicked".into())))
            .collect()
    });

    let decoded = results.iter().filter(|r| r.is_ok()).count() as u64;
    let mut ok = Vec::with_capacity(requests.len());
    for (&request, result) in requests.iter().zip(results) {
        ok.push(catch_unwind(AssertUnwindSafe(|| respond(request, result, st))).unwrap_or(false));
    }
    let exec_end = triton::now_ns();
    for (&request, &success) in requests.iter().zip(&ok) {
        // SAFETY: live request, released exactly once, after its response was sent.
        unsafe {
            let _ = take(sys::TRITONBACKEND_ModelInstanceReportStatistics(
                instance, request, success, exec_start, compute.0, compute.1, exec_end,
            ));
            if let Err(e) = take(sys::TRITONBACKEND_RequestRelease(
                request,
                sys::REQUEST_RELEASE_ALL,
            )) {
                log::error!("cannot release a request: {e}");
            }
        }
    }
    if decoded > 0 {
        // The statistics extension's execution counts: one batch of `decoded` users.
        let _ = take(unsafe {
            sys::TRITONBACKEND_ModelInstanceReportBatchStatistics(
                instance, decoded, exec_start, compute.0, compute.1, exec_end,
            )
        });
    }
    ptr::null_mut()
}

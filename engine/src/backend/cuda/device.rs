//! One CUDA device: context, stream, kernels compiled on first use, and launches.

use super::compile::{self, Target};
use super::{cache, err, kernels, libs};
use crate::error::Result;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// A kernel argument: a device address or a scalar.
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    Ptr(u64),
    I32(i32),
    F32(f32),
}

pub(crate) fn drv(what: &str) -> impl Fn(cudarc::driver::DriverError) -> crate::Error + '_ {
    move |e| err(format!("{what}: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub target: Target,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub nvrtc: (i32, i32),
    include: PathBuf,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
}

impl Device {
    /// Opens device `ordinal`. Every missing piece is an error, never a panic.
    pub fn open(ordinal: usize) -> Result<Self> {
        libs::require_driver()?;
        libs::require_nvrtc()?;
        let count =
            CudaContext::device_count().map_err(drv("cannot initialise the CUDA driver"))?;
        let driver = driver_version()?;
        if driver < MIN_DRIVER {
            return Err(err(format!(
                "the NVIDIA driver supports CUDA {}.{}; the kernels are built by NVRTC 13 and need a driver for CUDA 13 or later (R580+)",
                driver / 1000,
                driver % 1000 / 10
            )));
        }
        if count <= 0 {
            return Err(err("the CUDA driver reports no device"));
        }
        if ordinal >= count as usize {
            return Err(err(format!(
                "CUDA device {ordinal} requested, {count} present"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(drv("cannot create a CUDA context"))?;
        // One stream orders every operation, so cudarc's per-buffer events are not needed.
        // SAFETY: called before any buffer exists in this context.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let name = ctx.name().map_err(drv("device name"))?;
        let cc = ctx
            .compute_capability()
            .map_err(drv("compute capability"))?;
        let nvrtc = compile::nvrtc_version()?;
        let include = libs::include_dir()?;
        let target = choose_target(cc, nvrtc)?;
        Ok(Device {
            ctx,
            stream,
            target,
            name,
            compute_capability: cc,
            nvrtc,
            include,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        })
    }

    fn module(&self, file: &'static kernels::KernelFile) -> Result<Arc<CudaModule>> {
        let mut modules = lock(&self.modules);
        if let Some(m) = modules.get(file.file) {
            return Ok(m.clone());
        }
        // A CUBIN, or PTX text NUL-terminated as NVRTC returns it: cuModuleLoadData takes both.
        let load = |image: Vec<u8>| self.ctx.load_module(cudarc::nvrtc::Ptx::from_binary(image));
        let cached = cache::load(file, self.target, &self.include, self.nvrtc)
            .and_then(|img| load(img).ok());
        let module = match cached {
            Some(m) => m,
            None => {
                let compiled =
                    cache::compile_and_store(file, self.target, &self.include, self.nvrtc)?;
                load(compiled.image).map_err(drv(&format!(
                    "loading {} ({})",
                    file.file,
                    self.target.arch()
                )))?
            }
        };
        modules.insert(file.file, module.clone());
        Ok(module)
    }

    pub fn function(&self, entry: &str) -> Result<CudaFunction> {
        if let Some(f) = lock(&self.functions).get(entry) {
            return Ok(f.clone());
        }
        let file = kernels::file_of(entry)
            .ok_or_else(|| err(format!("no kernel file defines `{entry}`")))?;
        let f = self
            .module(file)?
            .load_function(entry)
            .map_err(drv(&format!("kernel `{entry}` in {}", file.file)))?;
        lock(&self.functions).insert(entry.to_string(), f.clone());
        Ok(f)
    }

    /// Launches `entry` with `block` threads per block over `grid` blocks.
    ///
    /// The caller guarantees that every address and size in `args` is valid for what the
    /// kernel reads and writes (shapes are checked before each launch).
    pub fn launch(
        &self,
        entry: &str,
        grid: (u32, u32, u32),
        block: u32,
        args: &[Arg],
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(()); // nothing to do; CUDA rejects empty grids
        }
        if grid.1 > 65535 || grid.2 > 65535 {
            return Err(err(format!(
                "`{entry}`: grid {grid:?} exceeds the device limits"
            )));
        }
        let f = self.function(entry)?;
        let mut b = self.stream.launch_builder(&f);
        for a in args {
            match a {
                Arg::Ptr(p) => b.arg(p),
                Arg::I32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: see above; every launch site checks shapes first.
        unsafe { b.launch(cfg) }.map_err(drv(&format!("launching `{entry}`")))?;
        Ok(())
    }

    pub fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        // Event tracking is off, so the returned guard does nothing on drop.
        s.device_ptr(&self.stream).0
    }

    /// An uninitialised buffer of `n` elements (at least one: CUDA refuses empty ones).
    pub fn alloc<T: DeviceRepr>(&self, n: usize) -> Result<CudaSlice<T>> {
        // SAFETY: every caller writes the buffer before reading it.
        unsafe { self.stream.alloc::<T>(n.max(1)) }
            .map_err(drv(&format!("allocating {n} elements")))
    }

    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros::<T>(n.max(1))
            .map_err(drv(&format!("allocating {n} elements")))
    }

    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        let mut dst = self.alloc::<T>(data.len())?;
        if !data.is_empty() {
            self.stream
                .memcpy_htod(data, &mut dst)
                .map_err(drv("upload"))?;
        }
        Ok(dst)
    }

    /// The first `n` elements of `src` (waits for the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        src: &CudaSlice<T>,
        n: usize,
    ) -> Result<Vec<T>> {
        if n > src.len() {
            return Err(err(format!(
                "download of {n} elements from a buffer of {}",
                src.len()
            )));
        }
        let mut out = vec![T::default(); n];
        if n > 0 {
            self.stream
                .memcpy_dtoh(&src.slice(..n), &mut out)
                .map_err(drv("download"))?;
        }
        Ok(out)
    }
}

/// CUDA 13.0: the oldest driver API that loads what NVRTC 13 emits.
const MIN_DRIVER: i32 = 13000;

/// The CUDA version the driver supports, as 1000 * major + 10 * minor.
fn driver_version() -> Result<i32> {
    let mut v = 0;
    // SAFETY: the driver library is present (checked by the caller) and initialised.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    if r != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        return Err(err(format!("cannot read the driver version: {r:?}")));
    }
    Ok(v)
}

/// CUBIN for the device's own architecture when NVRTC knows it, else PTX for the newest
/// architecture NVRTC knows below it (the driver compiles that for the device).
fn choose_target(cc: (i32, i32), nvrtc: (i32, i32)) -> Result<Target> {
    let sm = (cc.0 * 10 + cc.1) as u32;
    let archs = compile::supported_archs()?;
    if archs.contains(&sm) {
        return Ok(Target::Cubin(sm));
    }
    match archs.iter().copied().filter(|&a| a <= sm).max() {
        Some(a) => Ok(Target::Ptx(a)),
        None => Err(err(format!(
            "the device is sm_{sm}, older than every architecture NVRTC {}.{} supports ({:?})",
            nvrtc.0, nvrtc.1, archs
        ))),
    }
}

//! The device, its queue and the recording of work: every op appends a dispatch to one
//! pending command encoder, and nothing is submitted until a result must come back to
//! the host (a readback) — so a decode step is one submission. Also: the pipeline cache
//! (one per device, compiled lazily, keyed by shader variant and entry point), a pool of
//! activation buffers, the per-dispatch uniform parameters, and device error capture.

use super::shaders::Variant;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

pub(crate) fn err(msg: impl Into<String>) -> Error {
    Error::Backend {
        backend: "wgpu".into(),
        msg: msg.into(),
    }
}

/// Counters for the benches: what a request costs in launches and transfers.
#[derive(Debug, Default)]
pub struct Stats {
    pub dispatches: AtomicU64,
    pub submissions: AtomicU64,
    pub readback_bytes: AtomicU64,
    pub upload_bytes: AtomicU64,
    /// Multiply-add work of the matrix products, as 2·m·n·k.
    pub matmul_flops: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub dispatches: u64,
    pub submissions: u64,
    pub readback_bytes: u64,
    pub upload_bytes: u64,
    pub matmul_flops: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            dispatches: self.dispatches.load(Ordering::Relaxed),
            submissions: self.submissions.load(Ordering::Relaxed),
            readback_bytes: self.readback_bytes.load(Ordering::Relaxed),
            upload_bytes: self.upload_bytes.load(Ordering::Relaxed),
            matmul_flops: self.matmul_flops.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct Pipe {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    label: String,
}

/// Uniform parameters of the dispatches recorded since the last submission, packed in
/// 64 KiB chunks (written to the device right before the submission).
struct ParamChunk {
    buf: Arc<wgpu::Buffer>,
    data: Vec<u8>,
}
const PARAM_CHUNK: u64 = 1 << 16;

#[derive(Default)]
struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    chunks: Vec<ParamChunk>,
    free_chunks: Vec<Arc<wgpu::Buffer>>,
}

/// Free activation buffers by capacity. A buffer returned while recorded work still
/// reads it is safe to hand out again: later work is recorded after it, and wgpu orders
/// the accesses; only host writes (`queue.write_buffer`) would jump the queue, and
/// uploads never reuse pooled buffers.
#[derive(Default)]
struct Pool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
}

/// An `f32`/`u32` device buffer that goes back to the pool when dropped.
pub struct GpuBuf {
    buf: Option<wgpu::Buffer>,
    /// Bytes in use (the buffer may be larger).
    pub bytes: u64,
    pool: Weak<Mutex<Pool>>,
}

impl GpuBuf {
    pub fn raw(&self) -> &wgpu::Buffer {
        // Only `drop` takes the buffer out.
        self.buf.as_ref().expect("GpuBuf used after drop")
    }
}

impl Drop for GpuBuf {
    fn drop(&mut self) {
        if let (Some(buf), Some(pool)) = (self.buf.take(), self.pool.upgrade()) {
            if let Ok(mut p) = pool.lock() {
                p.free.entry(buf.size()).or_default().push(buf);
            }
        }
    }
}

/// A storage binding: a buffer, or a byte range of one.
#[derive(Clone, Copy)]
pub(crate) struct Bind<'a> {
    pub buf: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl<'a> From<&'a GpuBuf> for Bind<'a> {
    fn from(b: &'a GpuBuf) -> Self {
        // Whole 16-byte elements, so that vec4 views reach the last values.
        Bind {
            buf: b.raw(),
            offset: 0,
            size: b.bytes.max(16).next_multiple_of(16),
        }
    }
}

pub struct Ctx {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    /// Weights above this are split across bindings (the device limit, or less for tests).
    pub max_binding: u64,
    /// The device's largest storage binding.
    hw_binding: u64,
    uniform_align: u64,
    pipes: Mutex<HashMap<(Variant, &'static str), Arc<Pipe>>>,
    pending: Mutex<Pending>,
    pool: Arc<Mutex<Pool>>,
    error: Arc<Mutex<Option<String>>>,
    pub stats: Stats,
    /// Fill new activation buffers with NaN so that unwritten elements show (tests).
    pub poison: bool,
    /// KV caches are stored in f16 (the device was opened with SHADER_F16).
    pub kv_f16: bool,
    /// `ONEREC_WGPU_PROFILE=1`: wait for every dispatch and add its wall time to its
    /// kernel's total (slow; for finding hot kernels, never for figures).
    profile: Option<Mutex<HashMap<String, (u64, f64)>>>,
    /// GPU timestamps around every dispatch (`WgpuOptions::timestamps`).
    pub(crate) timestamps: Option<super::timing::Timestamps>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these structures half-updated in a
    // way that matters more than the error it already raised.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Maps a MAP_READ buffer whose copy has been submitted, waits for it and returns its
/// first `bytes` bytes (readbacks and kernel timestamps).
pub(crate) fn map_read(device: &wgpu::Device, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    let done: Arc<Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>> = Arc::default();
    let d = done.clone();
    buf.map_async(wgpu::MapMode::Read, .., move |r| *lock(&d) = Some(r));
    device
        .poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: None,
        })
        .map_err(|e| err(format!("waiting for the device: {e}")))?;
    // Another thread's poll may be the one that runs our callback, a moment later.
    let mut spins = 0u32;
    let result = loop {
        if let Some(r) = lock(&done).take() {
            break r;
        }
        spins += 1;
        if spins > 1_000_000 {
            return Err(err("the device did not finish the readback"));
        }
        let _ = device.poll(wgpu::PollType::Poll);
        std::thread::yield_now();
    };
    result.map_err(|e| err(format!("reading back {bytes} bytes: {e}")))?;
    let out = {
        let view = buf
            .get_mapped_range(..)
            .map_err(|e| err(format!("reading back {bytes} bytes: {e}")))?;
        view[..bytes as usize].to_vec()
    };
    buf.unmap();
    Ok(out)
}

/// Capacity class of a request, so that freed buffers are found again.
fn capacity(bytes: u64) -> u64 {
    let b = bytes.max(256);
    if b <= 1 << 20 {
        b.next_power_of_two()
    } else {
        b.next_multiple_of(1 << 20)
    }
}

/// Splits a launch of `n` workgroups into a grid of at most 65535 per dimension
/// (shaders rebuild the linear index with grid.wgsl).
pub(crate) fn grid(n: u32) -> (u32, u32) {
    if n <= 65535 {
        (n.max(1), 1)
    } else {
        (65535, n.div_ceil(65535))
    }
}

impl Ctx {
    pub fn new(
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        max_binding: Option<u64>,
    ) -> Self {
        let error: Arc<Mutex<Option<String>>> = Arc::default();
        let e = error.clone();
        device.on_uncaptured_error(Arc::new(move |er: wgpu::Error| {
            let mut slot = lock(&e);
            if slot.is_none() {
                *slot = Some(er.to_string());
            }
        }));
        let e = error.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let mut slot = lock(&e);
            if slot.is_none() {
                *slot = Some(format!("device lost ({reason:?}): {msg}"));
            }
        });
        let limits = device.limits();
        let hw_max = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        Ctx {
            info: adapter.get_info(),
            features: device.features(),
            max_binding: max_binding.map_or(hw_max, |m| m.min(hw_max)) & !3,
            hw_binding: hw_max,
            uniform_align: limits.min_uniform_buffer_offset_alignment.max(16) as u64,
            pipes: Mutex::default(),
            pending: Mutex::default(),
            pool: Arc::default(),
            error,
            stats: Stats::default(),
            poison: false,
            kv_f16: false,
            profile: (std::env::var("ONEREC_WGPU_PROFILE").as_deref() == Ok("1"))
                .then(Mutex::default),
            timestamps: None,
            device,
            queue,
        }
    }

    /// The first device error (validation, out of memory, device loss) since the last check.
    pub fn check(&self) -> Result<()> {
        match lock(&self.error).take() {
            Some(msg) => Err(err(msg)),
            None => Ok(()),
        }
    }

    pub(crate) fn pipe(&self, variant: &Variant, entry: &'static str) -> Result<Arc<Pipe>> {
        let key = (variant.clone(), entry);
        if let Some(p) = lock(&self.pipes).get(&key) {
            return Ok(p.clone());
        }
        let src = variant.source().map_err(err)?;
        let label = format!("{}{:?}:{entry}", variant.file, variant.defines);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        self.check()
            .map_err(|e| err(format!("compiling {label}: {e}")))?;
        let layout = pipeline.get_bind_group_layout(0);
        let p = Arc::new(Pipe {
            pipeline,
            layout,
            label,
        });
        lock(&self.pipes).insert(key, p.clone());
        Ok(p)
    }

    /// A device buffer of at least `bytes`, uninitialised (NaN-filled when poisoning).
    pub fn alloc(&self, bytes: u64) -> Result<GpuBuf> {
        let cap = capacity(bytes);
        let reused = lock(&self.pool).free.get_mut(&cap).and_then(|v| v.pop());
        let buf = match reused {
            Some(b) => b,
            None => {
                let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("activation"),
                    size: cap,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                // Out of memory or over the device's limits shows here, as an error.
                self.check()
                    .map_err(|e| err(format!("allocating {bytes} bytes: {e}")))?;
                b
            }
        };
        let b = GpuBuf {
            buf: Some(buf),
            bytes,
            pool: Arc::downgrade(&self.pool),
        };
        if self.poison {
            self.fill(&b, f32::NAN.to_bits())?;
        }
        Ok(b)
    }

    /// A new buffer holding `data` (padded to 4 bytes), written at creation: never a
    /// pooled buffer, so the write cannot overtake recorded work.
    pub fn upload(&self, data: &[u8]) -> Result<GpuBuf> {
        let bytes = data.len() as u64;
        let buf = self.create_init(data, capacity(bytes), "upload")?;
        self.stats.upload_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(GpuBuf {
            buf: Some(buf),
            bytes,
            pool: Arc::downgrade(&self.pool),
        })
    }

    /// A weight buffer (not pooled): exactly `data`, padded to 4 bytes.
    pub fn upload_weight(&self, data: &[u8]) -> Result<wgpu::Buffer> {
        self.upload_weights(&[data])
    }

    /// One weight buffer holding `parts` back to back, copied straight from their bytes
    /// (the mapped file) into the buffer: no host copy of the whole.
    pub fn upload_weights(&self, parts: &[&[u8]]) -> Result<wgpu::Buffer> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.stats
            .upload_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
        // Padded to 16 bytes: kernels read weights as vec4<u32>.
        self.create_init_parts(parts, (len as u64).next_multiple_of(16).max(16), "weight")
    }

    fn create_init(&self, data: &[u8], size: u64, label: &str) -> Result<wgpu::Buffer> {
        self.create_init_parts(&[data], size, label)
    }

    fn create_init_parts(&self, parts: &[&[u8]], size: u64, label: &str) -> Result<wgpu::Buffer> {
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: true,
        });
        {
            let mut view = buf
                .get_mapped_range_mut(..)
                .map_err(|e| err(format!("{label} buffer of {size} bytes: {e}")))?;
            let mut at = 0;
            for part in parts {
                view.slice(at..at + part.len()).copy_from_slice(part);
                at += part.len();
            }
        }
        buf.unmap();
        self.check()
            .map_err(|e| err(format!("{label} buffer of {size} bytes: {e}")))?;
        Ok(buf)
    }

    /// Sets every 32-bit word of `b` to `bits`.
    pub fn fill(&self, b: &GpuBuf, bits: u32) -> Result<()> {
        let words = u32::try_from(b.bytes / 4).map_err(|_| {
            err(format!(
                "a buffer of {} bytes is too large for one launch",
                b.bytes
            ))
        })?;
        if words == 0 {
            return Ok(());
        }
        let pipe = self.pipe(&Variant::new("elementwise.wgsl", &[]), "fill")?;
        let params = [words, bits, 0, 0];
        self.dispatch(
            &pipe,
            bytemuck::bytes_of(&params),
            &[(1, b.into())],
            words.div_ceil(256),
        )
    }

    /// Records one dispatch of `groups` workgroups (folded into a 2-D grid).
    pub(crate) fn dispatch(
        &self,
        pipe: &Pipe,
        params: &[u8],
        binds: &[(u32, Bind<'_>)],
        groups: u32,
    ) -> Result<()> {
        let (x, y) = grid(groups);
        self.dispatch_xy(pipe, params, binds, x, y)
    }

    pub(crate) fn dispatch_xy(
        &self,
        pipe: &Pipe,
        params: &[u8],
        binds: &[(u32, Bind<'_>)],
        x: u32,
        y: u32,
    ) -> Result<()> {
        let mut pend = lock(&self.pending);
        let (pbuf, poff, psize) = self.push_params(&mut pend, params);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &pbuf,
                offset: poff,
                size: wgpu::BufferSize::new(psize),
            }),
        }];
        for (slot, b) in binds {
            if b.size > self.hw_binding {
                return Err(err(format!(
                    "a binding of {} bytes exceeds the device limit of {} bytes",
                    b.size, self.hw_binding
                )));
            }
            entries.push(wgpu::BindGroupEntry {
                binding: *slot,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b.buf,
                    offset: b.offset,
                    size: wgpu::BufferSize::new(b.size),
                }),
            });
        }
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.layout,
            entries: &entries,
        });
        if self.timestamps.as_ref().is_some_and(|t| t.full()) {
            self.flush_locked(&mut pend)?;
        }
        let query = self.timestamps.as_ref().map(|t| t.begin(&pipe.label));
        let pass = self.pass(&mut pend);
        if let (Some(t), Some(q)) = (&self.timestamps, query) {
            pass.write_timestamp(t.queries(), q);
        }
        pass.set_pipeline(&pipe.pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(x, y, 1);
        if let (Some(t), Some(q)) = (&self.timestamps, query) {
            pass.write_timestamp(t.queries(), q + 1);
        }
        self.stats.dispatches.fetch_add(1, Ordering::Relaxed);
        if let Some(prof) = &self.profile {
            let t = std::time::Instant::now();
            self.flush_locked(&mut pend)?;
            let _ = self.device.poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            });
            let mut p = lock(prof);
            let e = p.entry(pipe.label.clone()).or_default();
            e.0 += 1;
            e.1 += t.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// Per kernel: launches and seconds, slowest first (with `ONEREC_WGPU_PROFILE=1`).
    pub fn profile(&self) -> Vec<(String, u64, f64)> {
        let Some(prof) = &self.profile else {
            return Vec::new();
        };
        let mut v: Vec<_> = lock(prof)
            .iter()
            .map(|(k, &(n, s))| (k.clone(), n, s))
            .collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    fn push_params(&self, pend: &mut Pending, params: &[u8]) -> (Arc<wgpu::Buffer>, u64, u64) {
        let size = (params.len() as u64).next_multiple_of(16).max(16);
        let fits = pend.chunks.last().is_some_and(|c| {
            (c.data.len() as u64).next_multiple_of(self.uniform_align) + size <= PARAM_CHUNK
        });
        if !fits {
            let buf = pend.free_chunks.pop().unwrap_or_else(|| {
                Arc::new(self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: PARAM_CHUNK,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }))
            });
            pend.chunks.push(ParamChunk {
                buf,
                data: Vec::with_capacity(PARAM_CHUNK as usize),
            });
        }
        let chunk = pend.chunks.last_mut().expect("a chunk was just ensured");
        let off = (chunk.data.len() as u64).next_multiple_of(self.uniform_align);
        chunk.data.resize(off as usize, 0);
        chunk.data.extend_from_slice(params);
        chunk.data.resize((off + size) as usize, 0);
        (chunk.buf.clone(), off, size)
    }

    fn encoder<'a>(&self, pend: &'a mut Pending) -> &'a mut wgpu::CommandEncoder {
        pend.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("onerec"),
                })
        })
    }

    fn pass<'a>(&self, pend: &'a mut Pending) -> &'a mut wgpu::ComputePass<'static> {
        if pend.pass.is_none() {
            let enc = self.encoder(pend);
            let pass = enc
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: None,
                })
                .forget_lifetime();
            pend.pass = Some(pass);
        }
        pend.pass.as_mut().expect("a pass was just opened")
    }

    /// Records a buffer-to-buffer copy (between compute passes).
    pub(crate) fn copy(
        &self,
        src: &wgpu::Buffer,
        src_off: u64,
        dst: &wgpu::Buffer,
        dst_off: u64,
        bytes: u64,
    ) {
        if bytes == 0 {
            return;
        }
        let mut pend = lock(&self.pending);
        pend.pass = None;
        self.encoder(&mut pend)
            .copy_buffer_to_buffer(src, src_off, dst, dst_off, bytes);
    }

    /// Submits everything recorded so far (one submission).
    pub fn flush(&self) -> Result<()> {
        let mut pend = lock(&self.pending);
        self.flush_locked(&mut pend)
    }

    fn flush_locked(&self, pend: &mut Pending) -> Result<()> {
        pend.pass = None;
        let Some(enc) = pend.encoder.take() else {
            return Ok(());
        };
        for c in pend.chunks.drain(..) {
            self.queue.write_buffer(&c.buf, 0, &c.data);
            pend.free_chunks.push(c.buf);
        }
        let mut enc = enc;
        let timed = self.timestamps.as_ref().map_or(0, |t| t.resolve(&mut enc));
        self.queue.submit([enc.finish()]);
        self.stats.submissions.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = &self.timestamps {
            t.collect(&self.device, timed)?;
        }
        self.check()
    }

    /// Copies `bytes` of `src` from `offset` back to the host: submits the pending work
    /// and waits for it.
    pub fn read(&self, src: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let size = bytes.next_multiple_of(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut pend = lock(&self.pending);
            pend.pass = None;
            self.encoder(&mut pend)
                .copy_buffer_to_buffer(src, offset, &staging, 0, size);
            self.flush_locked(&mut pend)?;
        }
        // A device error (validation, loss) names the cause better than the failed map.
        let out =
            map_read(&self.device, &staging, bytes).map_err(|e| self.check().err().unwrap_or(e))?;
        self.check()?;
        self.stats
            .readback_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        Ok(out)
    }
}

/// One GPU adapter as `onerec devices` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterDesc {
    /// Position in [`list_adapters`] (the device index of `EngineOptions::device`).
    pub index: usize,
    pub name: String,
    /// Vulkan, Metal, Dx12, ...
    pub backend: String,
    /// DiscreteGpu, IntegratedGpu, VirtualGpu, Cpu (a software rasteriser: lavapipe,
    /// llvmpipe, SwiftShader) or Other.
    pub device_type: String,
    pub driver: String,
    /// The adapter is a software implementation on the CPU.
    pub is_software: bool,
}

/// Every adapter wgpu reaches (Vulkan, Metal, DX12; `WGPU_BACKEND` narrows the choice),
/// in a stable order. Never panics: a broken driver reads as no adapter.
pub(crate) fn adapters() -> Vec<wgpu::Adapter> {
    super::quiet::quiet_gpu_probe();
    std::panic::catch_unwind(|| {
        let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        let instance = wgpu::Instance::new(desc);
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
    })
    .unwrap_or_default()
}

/// Describes the adapters of [`adapters`].
pub fn list_adapters() -> Vec<AdapterDesc> {
    adapters()
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let i = a.get_info();
            AdapterDesc {
                index,
                name: i.name.clone(),
                backend: format!("{:?}", i.backend),
                device_type: format!("{:?}", i.device_type),
                driver: format!("{} {}", i.driver, i.driver_info).trim().to_string(),
                is_software: i.device_type == wgpu::DeviceType::Cpu,
            }
        })
        .collect()
}

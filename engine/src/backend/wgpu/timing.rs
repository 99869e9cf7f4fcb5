//! GPU time per kernel from timestamps written around every dispatch inside the compute
//! passes (`WgpuOptions::timestamps`, `ONEREC_WGPU_TIMESTAMPS=1`): unlike
//! `ONEREC_WGPU_PROFILE=1`, nothing waits after a launch, so submissions and the
//! request's wall time stay as they are. Needs TIMESTAMP_QUERY and
//! TIMESTAMP_QUERY_INSIDE_PASSES (lavapipe has both). The two writes add a little to
//! every launch: launches of ~100 µs read high, large kernels are accurate.

use super::context::{lock, map_read};
use crate::error::Result;
use std::collections::HashMap;
use std::sync::Mutex;

/// Timestamps per query set: two per dispatch, so a submission holds at most half as
/// many dispatches; a full set makes the context submit first.
const SLOTS: u32 = 4096;

pub(crate) struct Timestamps {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
    /// Kernel of each dispatch of the pending submission, in order.
    pending: Mutex<Vec<String>>,
    /// Per kernel: launches and GPU seconds.
    totals: Mutex<HashMap<String, (u64, f64)>>,
    /// Nanoseconds per timestamp tick.
    period: f64,
}

impl Timestamps {
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Self {
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: u64::from(SLOTS) * 8,
                usage,
                mapped_at_creation: false,
            })
        };
        Timestamps {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: SLOTS,
            }),
            resolve: buffer(
                "timestamps",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            staging: buffer(
                "timestamps readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            pending: Mutex::default(),
            totals: Mutex::default(),
            period: f64::from(queue.get_timestamp_period()),
        }
    }

    /// Whether the pending submission has no room for another dispatch.
    pub fn full(&self) -> bool {
        lock(&self.pending).len() as u32 * 2 + 2 > SLOTS
    }

    /// Records `kernel`'s launch; returns the query index of its first timestamp.
    pub fn begin(&self, kernel: &str) -> u32 {
        let mut p = lock(&self.pending);
        p.push(kernel.to_string());
        2 * (p.len() as u32 - 1)
    }

    pub fn queries(&self) -> &wgpu::QuerySet {
        &self.queries
    }

    /// Resolves the pending submission's timestamps into the readback buffer (before the
    /// encoder is finished); returns how many dispatches they cover.
    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder) -> u32 {
        let n = lock(&self.pending).len() as u32;
        if n > 0 {
            enc.resolve_query_set(&self.queries, 0..2 * n, &self.resolve, 0);
            enc.copy_buffer_to_buffer(&self.resolve, 0, &self.staging, 0, 16 * u64::from(n));
        }
        n
    }

    /// After the submission: waits for it, reads the `n` pairs back and adds them up.
    pub fn collect(&self, device: &wgpu::Device, n: u32) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let bytes = map_read(device, &self.staging, 16 * u64::from(n))?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let kernels = std::mem::take(&mut *lock(&self.pending));
        let mut totals = lock(&self.totals);
        for (kernel, pair) in kernels.iter().zip(ticks.chunks_exact(2)) {
            let t = totals.entry(kernel.clone()).or_default();
            t.0 += 1;
            t.1 += pair[1].saturating_sub(pair[0]) as f64 * self.period * 1e-9;
        }
        Ok(())
    }

    /// Per kernel: launches and GPU seconds, slowest first.
    pub fn totals(&self) -> Vec<(String, u64, f64)> {
        let mut v: Vec<_> = lock(&self.totals)
            .iter()
            .map(|(k, &(n, s))| (k.clone(), n, s))
            .collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    pub fn reset(&self) {
        lock(&self.totals).clear();
    }
}

//! Wall time per backend op, for `onerec bench --profile`: where a request's time goes on
//! the CPU. Off unless asked for (`CpuBackend::with_profile`); then each op call costs two
//! clock reads and two relaxed adds. Times are inclusive and ops do not nest (the backend
//! calls its kernels, never its own trait methods), so the shares add up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The backend ops that are timed.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Upload,
    Download,
    GatherSum,
    Matmul,
    RmsNorm,
    Add,
    WriteRows,
    Attention,
    Ffn,
    Moe,
    LogSoftmax,
    BeamStep,
    Beams,
}

/// Names in the order of `Op` (its discriminant indexes them).
const NAMES: [&str; 13] = [
    "upload",
    "download",
    "gather_sum (embeddings)",
    "matmul (projections, heads)",
    "rms_norm",
    "add (residuals)",
    "write_rows (K/V cache)",
    "attention",
    "ffn (dense SwiGLU)",
    "moe (router + experts)",
    "log_softmax",
    "beams_step (constrained top-B)",
    "beams_start / finish",
];

#[derive(Debug, Default)]
pub struct OpProfile {
    on: bool,
    calls: [AtomicU64; NAMES.len()],
    nanos: [AtomicU64; NAMES.len()],
}

/// Adds the time since it was made to its op when dropped.
pub struct Timer<'a> {
    profile: &'a OpProfile,
    op: Op,
    start: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let i = self.op as usize;
        let ns = self.start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.profile.calls[i].fetch_add(1, Ordering::Relaxed);
        self.profile.nanos[i].fetch_add(ns, Ordering::Relaxed);
    }
}

impl OpProfile {
    pub fn new(on: bool) -> Self {
        OpProfile {
            on,
            ..Default::default()
        }
    }

    /// A timer for one call of `op`, or None when profiling is off.
    #[inline]
    pub fn time(&self, op: Op) -> Option<Timer<'_>> {
        self.on.then(|| Timer {
            profile: self,
            op,
            start: Instant::now(),
        })
    }

    /// (op, calls, seconds) so far, in the order of the ops above; ops never called are
    /// left out.
    pub fn snapshot(&self) -> Vec<(&'static str, u64, f64)> {
        NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let calls = self.calls[i].load(Ordering::Relaxed);
                let ns = self.nanos[i].load(Ordering::Relaxed);
                (*name, calls, ns as f64 / 1e9)
            })
            .filter(|&(_, calls, _)| calls > 0)
            .collect()
    }

    pub fn reset(&self) {
        for a in self.calls.iter().chain(&self.nanos) {
            a.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_when_on() {
        let off = OpProfile::new(false);
        drop(off.time(Op::Matmul));
        assert!(off.snapshot().is_empty());
        let on = OpProfile::new(true);
        for _ in 0..3 {
            let _t = on.time(Op::Attention);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let s = on.snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].0, s[0].1), ("attention", 3));
        assert!(s[0].2 >= 0.003, "{s:?}");
        on.reset();
        assert!(on.snapshot().is_empty());
    }
}

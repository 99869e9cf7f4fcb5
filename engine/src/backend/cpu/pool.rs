//! Large activation buffers kept for reuse across ops and requests.
//!
//! A large `Vec` freed to glibc goes back to the OS (an mmap'd block, or a heap trimmed
//! past its threshold), so the next one of that size starts as fresh pages and every
//! first write to a page faults: 1.4 µs per 4 KiB page on the dev VM against 0.12 µs to
//! zero a page already mapped. KV caches, logits and the products' outputs took about
//! 5,900 faults per medium beam-128 request (the rest of its 12,800 were each beam's
//! candidate list in `select.rs`); with the pool it took 0.96 of the time (median of 6
//! interleaved rounds, 2 threads; 0.99 in a noisier 8-round run). Buffers of at least
//! `MIN_FLOATS` come back here when their `CpuBuf` drops and are handed out again,
//! zeroed; the pool holds at most `CAP_BYTES` (a request's working set, which the
//! process holds while it runs anyway).

use std::sync::Mutex;

/// Smaller buffers stay with the allocator, which reuses them without new pages.
const MIN_FLOATS: usize = 1 << 16;
/// The most the pool keeps; a buffer that would pass it is freed.
const CAP_BYTES: usize = 512 << 20;
/// The most buffers it keeps (each reuse scans them).
const MAX_BUFFERS: usize = 256;

#[derive(Debug, Default)]
pub struct BufPool {
    free: Mutex<Free>,
}

#[derive(Debug, Default)]
struct Free {
    bufs: Vec<Vec<f32>>,
    bytes: usize,
}

fn bytes(v: &Vec<f32>) -> usize {
    v.capacity() * std::mem::size_of::<f32>()
}

impl BufPool {
    /// `len` zeros: a kept buffer of at least `len` and at most twice that capacity
    /// (the smallest such), or a new one.
    pub fn zeroed(&self, len: usize) -> Vec<f32> {
        match self.reuse(len) {
            Some(mut v) => {
                v.resize(len, 0.0);
                v
            }
            None => vec![0.0; len],
        }
    }

    /// A copy of `src`, in a kept buffer where one fits.
    pub fn copy_of(&self, src: &[f32]) -> Vec<f32> {
        match self.reuse(src.len()) {
            Some(mut v) => {
                v.extend_from_slice(src);
                v
            }
            None => src.to_vec(),
        }
    }

    /// Keeps `v` for reuse if it is large and the pool has room; frees it otherwise.
    pub fn give(&self, v: Vec<f32>) {
        if v.capacity() < MIN_FLOATS {
            return;
        }
        let mut f = self.lock();
        if f.bufs.len() < MAX_BUFFERS && f.bytes + bytes(&v) <= CAP_BYTES {
            f.bytes += bytes(&v);
            f.bufs.push(v);
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    pub fn held_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// An empty kept buffer with room for `len` values, if one fits.
    fn reuse(&self, len: usize) -> Option<Vec<f32>> {
        if len < MIN_FLOATS {
            return None;
        }
        let mut f = self.lock();
        let fits = |v: &Vec<f32>| v.capacity() >= len && v.capacity() / 2 <= len;
        let i = (0..f.bufs.len())
            .filter(|&i| fits(&f.bufs[i]))
            .min_by_key(|&i| f.bufs[i].capacity())?;
        let mut v = f.bufs.swap_remove(i);
        f.bytes -= bytes(&v);
        v.clear();
        Some(v)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        // The lists stay consistent at every unlock, so a panic elsewhere leaves them usable.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_large_buffers_zeroed_and_keeps_small_ones_out() {
        let pool = BufPool::default();
        let mut v = pool.zeroed(MIN_FLOATS * 2);
        v.iter_mut().for_each(|x| *x = 7.0);
        let ptr = v.as_ptr();
        pool.give(v);
        assert_eq!(pool.held_bytes(), MIN_FLOATS * 2 * 4);
        // Too small for it (more than twice smaller): a new buffer.
        let small = pool.zeroed(MIN_FLOATS - 1);
        assert_eq!(pool.held_bytes(), MIN_FLOATS * 2 * 4);
        pool.give(small);
        assert_eq!(
            pool.held_bytes(),
            MIN_FLOATS * 2 * 4,
            "small buffers are not kept"
        );
        let again = pool.zeroed(MIN_FLOATS * 2 - 5);
        assert_eq!(again.as_ptr(), ptr, "the kept buffer is reused");
        assert_eq!(again.len(), MIN_FLOATS * 2 - 5);
        assert!(
            again.iter().all(|&x| x == 0.0),
            "reused buffers come zeroed"
        );
        assert_eq!(pool.held_bytes(), 0);
        pool.give(again);
        let copy = pool.copy_of(&vec![3.0; MIN_FLOATS + 1]);
        assert_eq!(copy.as_ptr(), ptr);
        assert!(copy.len() == MIN_FLOATS + 1 && copy.iter().all(|&x| x == 3.0));
    }

    #[test]
    fn holds_at_most_its_cap() {
        let pool = BufPool::default();
        let each = CAP_BYTES / 4 / 3 + 1;
        for _ in 0..4 {
            pool.give(vec![0.0; each]);
        }
        assert!(pool.held_bytes() <= CAP_BYTES);
        assert_eq!(pool.held_bytes(), 2 * each * 4);
    }
}

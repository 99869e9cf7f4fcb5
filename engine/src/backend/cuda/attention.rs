//! Multi-head attention over f32 keys (encoder) or the f16 KV cache (decoder).

use super::device::Arg;
use super::{err, i32_of, BufData, CudaBackend, CudaBuf};
use crate::backend::KeyMap;
use crate::error::Result;

/// Heads per block (`ATT_WARPS`) and the largest head size (`ATT_MAX_HEAD_DIM`) of attention.cu.
const HEADS_PER_BLOCK: usize = 4;
const MAX_HEAD_DIM: usize = 256;

impl CudaBackend {
    pub(super) fn attention_impl(
        &self,
        q: &CudaBuf,
        k: &CudaBuf,
        v: &CudaBuf,
        n_heads: usize,
        keys: KeyMap<'_, Vec<u32>>,
    ) -> Result<CudaBuf> {
        keys.check(
            (q.rows, q.cols),
            (k.rows, k.cols),
            (v.rows, v.cols),
            n_heads,
        )
        .map_err(err)?;
        let d = q.cols;
        if d / n_heads > MAX_HEAD_DIM {
            return Err(err(format!(
                "attention: head size {} is above the {MAX_HEAD_DIM} this kernel supports",
                d / n_heads
            )));
        }
        let rows = q.rows;
        // Validated here so the kernel can index freely.
        let (spans, index, per_row): (Option<Vec<i32>>, Option<Vec<i32>>, usize) = match keys {
            KeyMap::Spans(spans) => {
                i32_of("keys", k.rows)?;
                (
                    Some(
                        spans
                            .iter()
                            .flat_map(|&(s, n)| [s as i32, n as i32])
                            .collect(),
                    ),
                    None,
                    0,
                )
            }
            KeyMap::Gather {
                per_row,
                stride,
                index,
            } => {
                i32_of("keys", k.rows)?;
                // The kernel reads `per_row` keys per row back to back.
                let packed = (0..rows)
                    .flat_map(|r| &index[r * stride..r * stride + per_row])
                    .map(|&i| i as i32)
                    .collect();
                (None, Some(packed), per_row)
            }
        };
        let out = self.new_f32(rows, d)?;
        if rows == 0 {
            return Ok(out);
        }
        let entry = match (&k.data, &v.data) {
            (BufData::F32(_), BufData::F32(_)) => "attention_f32",
            (BufData::F16(_), BufData::F16(_)) => "attention_f16",
            _ => {
                return Err(err(
                    "attention: keys and values are stored in different types",
                ))
            }
        };
        let spans_dev = spans.map(|s| self.dev.upload(&s)).transpose()?;
        let index_dev = index.map(|i| self.dev.upload(&i)).transpose()?;
        let args = [
            Arg::Ptr(self.dev.ptr(q.f32("attention")?)),
            Arg::Ptr(self.ptr(k)),
            Arg::Ptr(self.ptr(v)),
            Arg::Ptr(self.ptr(&out)),
            Arg::I32(i32_of("width", d)?),
            Arg::I32(i32_of("heads", n_heads)?),
            Arg::Ptr(spans_dev.as_ref().map_or(0, |s| self.dev.ptr(s))),
            Arg::Ptr(index_dev.as_ref().map_or(0, |s| self.dev.ptr(s))),
            Arg::I32(i32_of("keys per row", per_row)?),
        ];
        let grid = (
            i32_of("rows", rows)? as u32,
            n_heads.div_ceil(HEADS_PER_BLOCK) as u32,
            1,
        );
        self.dev
            .launch(entry, grid, (HEADS_PER_BLOCK * 32) as u32, &args)?;
        Ok(out)
    }
}

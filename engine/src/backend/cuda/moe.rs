//! The sparse MoE on the device: routing, grouping by expert and the expert-grouped
//! products run without a host round trip (the routes are read back only when asked).

use super::device::Arg;
use super::matmul::{gemm_grid, GEMM_THREADS};
use super::{err, i32_of, CudaBackend, CudaBuf, CudaWeight};
use crate::backend::Moe;
use crate::error::Result;

/// `MOE_MAX_EXPERTS` of moe.cu (the grouping kernel's shared-memory counters).
const MAX_EXPERTS: usize = 1024;

impl CudaBackend {
    /// Device address of the table of expert weight addresses of `m` (six per expert:
    /// gate, gate scales, up, up scales, down, down scales), uploaded on first use.
    fn moe_table(&self, m: &Moe<CudaWeight>) -> Result<u64> {
        let dev = &self.dev;
        let key: Vec<u64> = m
            .experts
            .iter()
            .flat_map(|f| {
                [
                    f.gate.ptr(dev),
                    f.gate.scales_ptr(dev),
                    f.up.ptr(dev),
                    f.up.scales_ptr(dev),
                    f.down.ptr(dev),
                    f.down.scales_ptr(dev),
                ]
            })
            .collect();
        let mut tables = self.moe_tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tables.get(&key) {
            return Ok(dev.ptr(t));
        }
        let t = dev.upload(&key)?;
        let p = dev.ptr(&t);
        tables.insert(key, t);
        Ok(p)
    }

    pub(super) fn moe_impl(
        &self,
        x: &CudaBuf,
        m: &Moe<CudaWeight>,
        routes: Option<&mut Vec<u32>>,
    ) -> Result<CudaBuf> {
        let n_experts = m.experts.len();
        if m.router.rows != n_experts || m.top_k == 0 || m.top_k > n_experts {
            return Err(err(format!(
                "moe: router has {} rows for {n_experts} experts, top_k {}",
                m.router.rows, m.top_k
            )));
        }
        if n_experts > MAX_EXPERTS {
            return Err(err(format!(
                "moe: {n_experts} experts, this backend supports up to {MAX_EXPERTS}"
            )));
        }
        let (d, first) = (x.cols, &m.experts[0]);
        let de = first.gate.rows;
        for (i, f) in m.experts.iter().enumerate() {
            let shapes_ok = f.gate.cols == d
                && f.up.cols == d
                && f.gate.rows == de
                && f.up.rows == de
                && f.down.cols == de
                && f.down.rows == d;
            if !shapes_ok {
                return Err(err(format!("moe: expert {i} weight shapes do not chain with width {d} and expert width {de}")));
            }
            if f.gate.dtype != first.gate.dtype
                || f.up.dtype != first.gate.dtype
                || f.down.dtype != first.down.dtype
            {
                return Err(err(format!(
                    "moe: expert {i} stores its weights in other types than expert 0"
                )));
            }
        }
        let rows = x.rows;
        let y = self.new_f32(rows, d)?;
        if rows == 0 || d == 0 {
            return Ok(y);
        }
        let (top_k, assigned) = (m.top_k, rows * m.top_k);
        let (ri, di, dei, ei, ki) = (
            i32_of("rows", rows)?,
            i32_of("width", d)?,
            i32_of("expert width", de)?,
            n_experts as i32,
            top_k as i32,
        );
        i32_of("routed rows", assigned)?;
        let dev = &self.dev;
        let logits = self.matmul_impl(x, &m.router)?;
        let experts = dev.alloc::<i32>(assigned)?;
        let probs = dev.alloc::<f32>(assigned)?;
        let route_args = [
            Arg::Ptr(self.ptr(&logits)),
            Arg::I32(ri),
            Arg::I32(ei),
            Arg::I32(ki),
            Arg::Ptr(dev.ptr(&experts)),
            Arg::Ptr(dev.ptr(&probs)),
        ];
        dev.launch(
            "moe_route",
            ((rows as u32).div_ceil(128), 1, 1),
            128,
            &route_args,
        )?;

        let offsets = dev.alloc::<i32>(n_experts + 1)?;
        let tok = dev.alloc::<i32>(assigned)?;
        let slot = dev.alloc::<i32>(assigned)?;
        let scale = dev.alloc::<f32>(assigned)?;
        let group_args = [
            Arg::Ptr(dev.ptr(&experts)),
            Arg::Ptr(dev.ptr(&probs)),
            Arg::I32(ri),
            Arg::I32(ki),
            Arg::I32(ei),
            Arg::Ptr(dev.ptr(&offsets)),
            Arg::Ptr(dev.ptr(&tok)),
            Arg::Ptr(dev.ptr(&slot)),
            Arg::Ptr(dev.ptr(&scale)),
        ];
        dev.launch("moe_group", (1, 1, 1), 1024, &group_args)?;

        let table = self.moe_table(m)?;
        let h = dev.alloc::<f32>(assigned * de)?;
        if de > 0 {
            let args = [
                Arg::Ptr(dev.ptr(x.f32("moe")?)),
                Arg::Ptr(table),
                Arg::Ptr(dev.ptr(&offsets)),
                Arg::Ptr(dev.ptr(&tok)),
                Arg::Ptr(dev.ptr(&h)),
                Arg::I32(dei),
                Arg::I32(di),
            ];
            // An expert gets each token at most once: `rows` bounds every group.
            dev.launch(
                &format!("moe_swiglu_{}", first.gate.suffix()),
                gemm_grid(rows, de, n_experts)?,
                GEMM_THREADS,
                &args,
            )?;
        }
        let slots = dev.alloc::<f32>(assigned * d)?;
        let args = [
            Arg::Ptr(dev.ptr(&h)),
            Arg::Ptr(table),
            Arg::Ptr(dev.ptr(&offsets)),
            Arg::Ptr(dev.ptr(&slot)),
            Arg::Ptr(dev.ptr(&scale)),
            Arg::Ptr(dev.ptr(&slots)),
            Arg::I32(di),
            Arg::I32(dei),
        ];
        dev.launch(
            &format!("moe_down_{}", first.down.suffix()),
            gemm_grid(rows, d, n_experts)?,
            GEMM_THREADS,
            &args,
        )?;
        let combine_args = [
            Arg::Ptr(dev.ptr(&slots)),
            Arg::Ptr(self.ptr(&y)),
            Arg::I32(ri),
            Arg::I32(ki),
            Arg::I32(di),
        ];
        dev.launch(
            "moe_combine",
            (ri as u32, d.div_ceil(256) as u32, 1),
            256,
            &combine_args,
        )?;
        if let Some(routes) = routes {
            routes.extend(
                dev.download(&experts, assigned)?
                    .into_iter()
                    .map(|e| e as u32),
            );
        }
        Ok(y)
    }
}

//! The SIMD level the CPU kernels run at, chosen at run time: the best this CPU has
//! (AVX-512 or AVX2+FMA on x86-64, NEON on aarch64, else scalar), or a lower one forced
//! with `ONEREC_CPU_SIMD=scalar|avx2|avx512|neon` or `CpuBackend::with_simd` (so every
//! level this CPU runs is tested). Kernels are written once over `pulp::Simd`.

use pulp::WithSimd;

/// A level this CPU was checked to run; holding one is the proof the kernels need
/// (`Avx2` means AVX2, FMA and F16C; `Avx512` AVX-512 F/BW/CD/DQ/VL besides).
#[derive(Clone, Copy, Debug)]
pub enum SimdLevel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2(pulp::x86::V3),
    #[cfg(target_arch = "x86_64")]
    Avx512(pulp::x86::V4),
    #[cfg(target_arch = "aarch64")]
    Neon(pulp::aarch64::Neon),
}

impl PartialEq for SimdLevel {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl SimdLevel {
    /// Every level this CPU runs, lowest first.
    pub fn available() -> Vec<SimdLevel> {
        let mut v = vec![SimdLevel::Scalar];
        #[cfg(target_arch = "x86_64")]
        if let Some(s) = pulp::x86::V3::try_new() {
            // The quantised kernels also convert f16 scales with F16C.
            if is_x86_feature_detected!("f16c") {
                v.push(SimdLevel::Avx2(s));
                if let Some(s) = pulp::x86::V4::try_new() {
                    v.push(SimdLevel::Avx512(s));
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(s) = pulp::aarch64::Neon::try_new() {
            v.push(SimdLevel::Neon(s));
        }
        v
    }

    /// The level named `name` (`scalar`, `avx2`, `neon`), if this CPU runs it.
    pub fn by_name(name: &str) -> Option<SimdLevel> {
        Self::available().into_iter().find(|l| l.name() == name)
    }

    /// The best level, capped by `ONEREC_CPU_SIMD` when set to a level this CPU runs
    /// (an unknown value is logged and ignored).
    pub fn detect() -> SimdLevel {
        let best = *Self::available().last().unwrap_or(&SimdLevel::Scalar);
        match std::env::var("ONEREC_CPU_SIMD") {
            Ok(name) => Self::by_name(name.trim()).unwrap_or_else(|| {
                log::warn!("ONEREC_CPU_SIMD={name}: not a level this CPU runs; using {best:?}");
                best
            }),
            Err(_) => best,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2(_) => "avx2",
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512(_) => "avx512",
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon(_) => "neon",
        }
    }

    /// Whether AVX2, FMA and F16C were detected (the AVX2 and AVX-512 levels): the proof
    /// the hand-written kernels of `quant_x86.rs` need.
    #[cfg(target_arch = "x86_64")]
    pub fn has_avx2(&self) -> bool {
        matches!(self, SimdLevel::Avx2(_) | SimdLevel::Avx512(_))
    }

    /// Runs `op` compiled for this level.
    #[inline(always)]
    pub fn run<Op: WithSimd>(self, op: Op) -> Op::Output {
        match self {
            SimdLevel::Scalar => pulp::Simd::vectorize(pulp::Scalar::new(), op),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2(s) => pulp::Simd::vectorize(s, op),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512(s) => pulp::Simd::vectorize(s, op),
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon(s) => pulp::Simd::vectorize(s, op),
        }
    }
}

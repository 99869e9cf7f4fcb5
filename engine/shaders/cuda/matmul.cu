// Matrix products `y = x · Wᵀ` (x f32 `[m, k]`, W `[n, k]` in f32, f16, bf16, q8 or q4) and
// the fused SwiGLU gate/up product of a dense FFN. Dequantisation happens in the
// kernel (gemm.cuh). Launch: grid (ceil(n/64), ceil(m/64)), 256 threads.
#include "gemm.cuh"

#define MATMUL(NAME, LOADER, INIT)                                                                     \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                         \
        NAME(const float* __restrict__ x, const void* w, const __half* scales, float* __restrict__ y, \
             int m, int n, int k) {                                                                    \
        const LOADER wl = INIT;                                                                        \
        gemm_tile(x, wl, y, GemmRows{nullptr, nullptr, nullptr}, m, n, k);                             \
    }

MATMUL(matmul_f32, WF32, {static_cast<const float*>(w)})
MATMUL(matmul_f16, WF16, {static_cast<const __half*>(w)})
MATMUL(matmul_bf16, WBF16, {static_cast<const unsigned short*>(w)})
MATMUL(matmul_q8, WQ8, (WQ8{static_cast<const signed char*>(w), scales}))
MATMUL(matmul_q4, WQ4, (WQ4{static_cast<const unsigned*>(w), scales}))

// h = silu(x·Gᵀ) ⊙ (x·Uᵀ), `[m, n]`; G and U share one storage type.
#define SWIGLU(NAME, LOADER, INIT_G, INIT_U)                                                                 \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                               \
        NAME(const float* __restrict__ x, const void* g, const __half* g_scales, const void* u,              \
             const __half* u_scales, float* __restrict__ h, int m, int n, int k) {                           \
        const LOADER gl = INIT_G;                                                                            \
        const LOADER ul = INIT_U;                                                                            \
        swiglu_tile(x, nullptr, gl, ul, h, m, n, k);                                                         \
    }

SWIGLU(swiglu_f32, WF32, {static_cast<const float*>(g)}, {static_cast<const float*>(u)})
SWIGLU(swiglu_f16, WF16, {static_cast<const __half*>(g)}, {static_cast<const __half*>(u)})
SWIGLU(swiglu_bf16, WBF16, {static_cast<const unsigned short*>(g)}, {static_cast<const unsigned short*>(u)})
SWIGLU(swiglu_q8, WQ8, (WQ8{static_cast<const signed char*>(g), g_scales}),
       (WQ8{static_cast<const signed char*>(u), u_scales}))
SWIGLU(swiglu_q4, WQ4, (WQ4{static_cast<const unsigned*>(g), g_scales}), (WQ4{static_cast<const unsigned*>(u), u_scales}))

// Sparse MoE on the device, no host round trip:
//   moe_route   softmax over the router logits and top-k per token (ties to the lower
//               expert; the chosen weights are not renormalised),
//   moe_group   counting sort of the (token, expert) pairs by expert,
//   moe_swiglu_* / moe_down_*   expert-grouped products (blockIdx.z = expert), the down
//               product writing p_e · SwiGLU_e(x) into the token's slot,
//   moe_combine sums each token's slots in ascending expert order (as the CPU does).
#include "gemm.cuh"

// One thread per token. logits `[rows, E]`; experts/probs `[rows, top_k]`, best first.
extern "C" __global__ void moe_route(const float* __restrict__ logits, int rows, int n_experts, int top_k,
                                     int* __restrict__ experts, float* __restrict__ probs) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* l = logits + (size_t)r * n_experts;
    float mx = -F32_INF;
    for (int e = 0; e < n_experts; e++) mx = fmaxf(mx, l[e]);
    float sum = 0.0f;
    for (int e = 0; e < n_experts; e++) sum += expf(l[e] - mx);
    // The j-th pick is the best expert strictly after the previous pick in the order
    // (probability descending, index ascending).
    float prev_p = F32_INF;
    int prev_e = -1;
    for (int j = 0; j < top_k; j++) {
        int best = -1;
        float best_p = 0.0f;
        for (int e = 0; e < n_experts; e++) {
            const float p = expf(l[e] - mx) / sum;
            const bool after_prev = p < prev_p || (p == prev_p && e > prev_e);
            if (after_prev && (best < 0 || p > best_p)) {
                best = e;
                best_p = p;
            }
        }
        if (best < 0) best = 0;  // unreachable for top_k <= E (checked by the host)
        experts[r * top_k + j] = best;
        probs[r * top_k + j] = best_p;
        prev_p = best_p;
        prev_e = best;
    }
}

#define MOE_MAX_EXPERTS 1024

// One block. Groups the `rows * top_k` assignments by expert: offsets `[E + 1]`;
// per grouped position, the token, its output slot and its weight.
extern "C" __global__ void __launch_bounds__(1024)
    moe_group(const int* __restrict__ experts, const float* __restrict__ probs, int rows, int top_k, int n_experts,
              int* __restrict__ offsets, int* __restrict__ tok, int* __restrict__ slot, float* __restrict__ scale) {
    __shared__ int count[MOE_MAX_EXPERTS];
    __shared__ int cursor[MOE_MAX_EXPERTS];
    const int n = rows * top_k;
    for (int e = threadIdx.x; e < n_experts; e += blockDim.x) count[e] = 0;
    __syncthreads();
    for (int a = threadIdx.x; a < n; a += blockDim.x) atomicAdd(&count[experts[a]], 1);
    __syncthreads();
    if (threadIdx.x == 0) {
        int acc = 0;
        for (int e = 0; e < n_experts; e++) {
            offsets[e] = acc;
            cursor[e] = acc;
            acc += count[e];
        }
        offsets[n_experts] = acc;
    }
    __syncthreads();
    for (int a = threadIdx.x; a < n; a += blockDim.x) {
        const int e = experts[a], r = a / top_k;
        int rank = 0;  // slot order = ascending expert index within the token
        for (int j = 0; j < top_k; j++) rank += experts[r * top_k + j] < e;
        const int pos = atomicAdd(&cursor[e], 1);
        tok[pos] = r;
        slot[pos] = r * top_k + rank;
        scale[pos] = probs[a];
    }
}

// Per expert, six device addresses: gate, gate scales, up, up scales, down, down scales
// (scales are 0 for float types).
#define MOE_TABLE_STRIDE 6

// h `[rows * top_k, d_expert]` in grouped order. grid (ceil(d_expert/64), ceil(rows/64), E).
#define MOE_SWIGLU(NAME, LOADER)                                                                             \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                                  \
        NAME(const float* __restrict__ x, const unsigned long long* __restrict__ table,                         \
             const int* __restrict__ offsets, const int* __restrict__ tok, float* __restrict__ h, int d_expert, \
             int d) {                                                                                           \
        const int e = blockIdx.z;                                                                               \
        const int off = offsets[e], m = offsets[e + 1] - off;                                                   \
        const unsigned long long* t = table + (size_t)e * MOE_TABLE_STRIDE;                                     \
        const LOADER g = LOADER##_at(t[0], t[1]);                                                               \
        const LOADER u = LOADER##_at(t[2], t[3]);                                                               \
        swiglu_tile(x, tok + off, g, u, h + (size_t)off * d_expert, m, d_expert, d);                            \
    }

// slots `[rows * top_k, d]`: slot[pos] = scale[pos] · h[pos] · Downᵀ.
#define MOE_DOWN(NAME, LOADER)                                                                               \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                                  \
        NAME(const float* __restrict__ h, const unsigned long long* __restrict__ table,                         \
             const int* __restrict__ offsets, const int* __restrict__ slot, const float* __restrict__ scale,    \
             float* __restrict__ slots, int d, int d_expert) {                                                  \
        const int e = blockIdx.z;                                                                               \
        const int off = offsets[e], m = offsets[e + 1] - off;                                                   \
        const unsigned long long* t = table + (size_t)e * MOE_TABLE_STRIDE;                                     \
        const LOADER w = LOADER##_at(t[4], t[5]);                                                               \
        gemm_tile(h + (size_t)off * d_expert, w, slots, GemmRows{nullptr, slot + off, scale + off}, m, d,      \
                  d_expert);                                                                                    \
    }

__device__ __forceinline__ WF32 WF32_at(unsigned long long w, unsigned long long) {
    return WF32{reinterpret_cast<const float*>(w)};
}
__device__ __forceinline__ WF16 WF16_at(unsigned long long w, unsigned long long) {
    return WF16{reinterpret_cast<const __half*>(w)};
}
__device__ __forceinline__ WBF16 WBF16_at(unsigned long long w, unsigned long long) {
    return WBF16{reinterpret_cast<const unsigned short*>(w)};
}
__device__ __forceinline__ WQ8 WQ8_at(unsigned long long w, unsigned long long s) {
    return WQ8{reinterpret_cast<const signed char*>(w), reinterpret_cast<const __half*>(s)};
}
__device__ __forceinline__ WQ4 WQ4_at(unsigned long long w, unsigned long long s) {
    return WQ4{reinterpret_cast<const unsigned*>(w), reinterpret_cast<const __half*>(s)};
}

MOE_SWIGLU(moe_swiglu_f32, WF32)
MOE_SWIGLU(moe_swiglu_f16, WF16)
MOE_SWIGLU(moe_swiglu_bf16, WBF16)
MOE_SWIGLU(moe_swiglu_q8, WQ8)
MOE_SWIGLU(moe_swiglu_q4, WQ4)
MOE_DOWN(moe_down_f32, WF32)
MOE_DOWN(moe_down_f16, WF16)
MOE_DOWN(moe_down_bf16, WBF16)
MOE_DOWN(moe_down_q8, WQ8)
MOE_DOWN(moe_down_q4, WQ4)

// y[r][c] = Σ_j slots[r * top_k + j][c]. grid (rows, ceil(d/256)), 256 threads.
extern "C" __global__ void moe_combine(const float* __restrict__ slots, float* __restrict__ y, int rows, int top_k,
                                       int d) {
    const int r = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= d || r >= rows) return;
    float acc = 0.0f;
    for (int j = 0; j < top_k; j++) acc += slots[((size_t)r * top_k + j) * d + c];
    y[(size_t)r * d + c] = acc;
}

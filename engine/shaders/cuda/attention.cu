// Multi-head attention of query rows over selected key/value rows, softmax computed
// online (one pass over the keys). q `[R, d]` f32; k, v `[S, d]` in f16 (the decoder's
// KV cache) or f32 (the encoder's transient keys). Each query row attends either a
// contiguous span of keys (`spans[2r]`, `spans[2r+1]` = start, length) or, when
// `index` is given, the `per_row` keys `index[r * per_row ..]`.
// Launch: grid (R, ceil(n_heads / 4)), 128 threads: one warp per (row, head).
#include "common.cuh"

#define ATT_WARPS 4
#define ATT_MAX_HEAD_DIM 256
#define ATT_SLOTS (ATT_MAX_HEAD_DIM / 32)

__device__ __forceinline__ float kv_load(const float* p, size_t i) { return p[i]; }
__device__ __forceinline__ float kv_load(const __half* p, size_t i) { return __half2float(p[i]); }

template <typename KV>
__device__ __forceinline__ void attention_warp(const float* __restrict__ q, const KV* __restrict__ k,
                                               const KV* __restrict__ v, float* __restrict__ out, int d, int n_heads,
                                               const int* __restrict__ spans, const int* __restrict__ index,
                                               int per_row) {
    __shared__ float qs[ATT_WARPS][ATT_MAX_HEAD_DIM];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r = blockIdx.x, h = blockIdx.y * ATT_WARPS + warp;
    if (h >= n_heads) return;  // whole warps only; no block-wide barrier follows
    const int hd = d / n_heads;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t col0 = (size_t)h * hd;
    for (int c = lane; c < hd; c += 32) qs[warp][c] = q[(size_t)r * d + col0 + c];
    __syncwarp();

    int n_keys, start = 0;
    const int* idx = nullptr;
    if (index) {
        n_keys = per_row;
        idx = index + (size_t)r * per_row;
    } else {
        start = spans[2 * r];
        n_keys = spans[2 * r + 1];
    }
    float m = -F32_INF, l = 0.0f;
    float acc[ATT_SLOTS];
#pragma unroll
    for (int i = 0; i < ATT_SLOTS; i++) acc[i] = 0.0f;
    for (int j = 0; j < n_keys; j++) {
        const size_t row = (size_t)(idx ? idx[j] : start + j) * d + col0;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_SLOTS; i++) {
            const int c = lane + 32 * i;
            if (c < hd) s = fmaf(qs[warp][c], kv_load(k, row + c), s);
        }
        s = warp_sum(s) * scale;
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new), p = expf(s - m_new);
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < ATT_SLOTS; i++) {
            const int c = lane + 32 * i;
            if (c < hd) acc[i] = fmaf(p, kv_load(v, row + c), acc[i] * corr);
        }
        m = m_new;
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int i = 0; i < ATT_SLOTS; i++) {
        const int c = lane + 32 * i;
        if (c < hd) out[(size_t)r * d + col0 + c] = acc[i] * inv;
    }
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_f32(const float* q, const float* k, const float* v, float* out, int d, int n_heads, const int* spans,
                  const int* index, int per_row) {
    attention_warp(q, k, v, out, d, n_heads, spans, index, per_row);
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_f16(const float* q, const __half* k, const __half* v, float* out, int d, int n_heads, const int* spans,
                  const int* index, int per_row) {
    attention_warp(q, k, v, out, d, n_heads, spans, index, per_row);
}

// The tiled product `y = x · Wᵀ` shared by matmul.cu and moe.cu, with the weight
// dequantised in the kernel: tiles of W are widened to f32 in shared memory, one
// quantisation block (32 values along k) per row and step.
//
// Tile: 64 rows of x by 64 rows of W per block of 256 threads, each thread 4x4
// outputs; k advances 32 at a time.
#pragma once
#include "common.cuh"

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 32
#define GEMM_THREADS 256
// Row stride of the transposed tiles: 4 floats of padding keep float4 alignment.
#define GEMM_LD (GEMM_BM + 4)

// Loaders: `load8` widens the 8 values `k0 .. k0+8` of weight row `row` into `v`.
// Float types guard the k tail (any k); quantised types need k % 32 == 0, checked by
// the caller, so a group of 8 never straddles a block or a 32-bit word.
struct WF32 {
    const float* w;
    __device__ __forceinline__ void load8(int row, int k0, int k, float v[8]) const {
        const float* p = w + (size_t)row * k + k0;
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = (k0 + i < k) ? p[i] : 0.0f;
    }
};

struct WF16 {
    const __half* w;
    __device__ __forceinline__ void load8(int row, int k0, int k, float v[8]) const {
        const __half* p = w + (size_t)row * k + k0;
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = (k0 + i < k) ? __half2float(p[i]) : 0.0f;
    }
};

struct WBF16 {
    const unsigned short* w;
    __device__ __forceinline__ void load8(int row, int k0, int k, float v[8]) const {
        const unsigned short* p = w + (size_t)row * k + k0;
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = (k0 + i < k) ? __uint_as_float((unsigned)p[i] << 16) : 0.0f;
    }
};

struct WQ8 {
    const signed char* q;
    const __half* s;
    __device__ __forceinline__ void load8(int row, int k0, int k, float v[8]) const {
        const size_t i = (size_t)row * k + k0;
        const int2 packed = *reinterpret_cast<const int2*>(q + i);  // 8-byte aligned
        const float scale = __half2float(s[i / QBLOCK]);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            v[j] = (float)(signed char)(packed.x >> (8 * j)) * scale;
            v[4 + j] = (float)(signed char)(packed.y >> (8 * j)) * scale;
        }
    }
};

struct WQ4 {
    const unsigned* q;
    const __half* s;
    __device__ __forceinline__ void load8(int row, int k0, int k, float v[8]) const {
        const size_t i = (size_t)row * k + k0;
        const unsigned word = q[i / 8];
        const float scale = __half2float(s[i / QBLOCK]);
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = (float)((int)((word >> (4 * j)) & 15u) - 8) * scale;
    }
};

// Where the rows of a product come from and go to. `x_rows`/`y_rows` (nullable) map
// tile row r to the row of x read and the row of y written; `y_scale` (nullable)
// multiplies output row r. This serves the MoE: gathered tokens in, weighted slots out.
struct GemmRows {
    const int* x_rows;
    const int* y_rows;
    const float* y_scale;
};

// Loads one 64x32 tile of x (rows m0.., columns k0..) transposed into `xs`.
__device__ __forceinline__ void gemm_load_x(const float* __restrict__ x, const int* x_rows, int m, int k, int m0,
                                            int k0, float (*xs)[GEMM_LD]) {
    const int t = threadIdx.x;
    const int r = t >> 2, c = (t & 3) * 8;
    const int gr = m0 + r;
    const float* p = nullptr;
    if (gr < m) p = x + (size_t)(x_rows ? x_rows[gr] : gr) * k;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const int gc = k0 + c + i;
        xs[c + i][r] = (p && gc < k) ? p[gc] : 0.0f;
    }
}

// Loads one 64x32 tile of W (rows n0..) transposed into `ws`, dequantised.
template <typename W>
__device__ __forceinline__ void gemm_load_w(const W& w, int n, int k, int n0, int k0, float (*ws)[GEMM_LD]) {
    const int t = threadIdx.x;
    const int r = t >> 2, c = (t & 3) * 8;
    float v[8];
    if (n0 + r < n && k0 + c < k) {
        w.load8(n0 + r, k0 + c, k, v);
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = 0.0f;
    }
#pragma unroll
    for (int i = 0; i < 8; i++) ws[c + i][r] = v[i];
}

// acc[i][j] += Σ_kk xs[kk][ty*4+i] · ws[kk][tx*4+j] over one 32-wide step.
__device__ __forceinline__ void gemm_step(const float (*xs)[GEMM_LD], const float (*ws)[GEMM_LD], float acc[4][4]) {
    const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
#pragma unroll 8
    for (int kk = 0; kk < GEMM_BK; kk++) {
        const float4 a = *reinterpret_cast<const float4*>(&xs[kk][ty * 4]);
        const float4 b = *reinterpret_cast<const float4*>(&ws[kk][tx * 4]);
        const float av[4] = {a.x, a.y, a.z, a.w};
        const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
}

// y[y_row(r)][c] = y_scale(r) · Σ_k x[x_row(r)][k] · W[c][k] for this block's tile.
// Tiles: blockIdx.x over n, blockIdx.y over m (m0 given so grouped callers can offset).
template <typename W>
__device__ __forceinline__ void gemm_tile(const float* __restrict__ x, const W& w, float* __restrict__ y, GemmRows rows,
                                          int m, int n, int k) {
    __shared__ __align__(16) float xs[GEMM_BK][GEMM_LD];
    __shared__ __align__(16) float ws[GEMM_BK][GEMM_LD];
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    if (m0 >= m) return;  // grouped launches size the grid for the largest group
    float acc[4][4] = {};
    for (int k0 = 0; k0 < k; k0 += GEMM_BK) {
        gemm_load_x(x, rows.x_rows, m, k, m0, k0, xs);
        gemm_load_w(w, n, k, n0, k0, ws);
        __syncthreads();
        gemm_step(xs, ws, acc);
        __syncthreads();
    }
    const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = m0 + ty * 4 + i;
        if (r >= m) continue;
        const size_t yr = (size_t)(rows.y_rows ? rows.y_rows[r] : r);
        const float sc = rows.y_scale ? rows.y_scale[r] : 1.0f;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int c = n0 + tx * 4 + j;
            if (c < n) y[yr * n + c] = acc[i][j] * sc;
        }
    }
}

__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }

// h[r][c] = silu(x·Gᵀ)[r][c] · (x·Uᵀ)[r][c]: the first half of a SwiGLU block, both
// products from one pass over x.
template <typename W>
__device__ __forceinline__ void swiglu_tile(const float* __restrict__ x, const int* x_rows, const W& g, const W& u,
                                            float* __restrict__ h, int m, int n, int k) {
    __shared__ __align__(16) float xs[GEMM_BK][GEMM_LD];
    __shared__ __align__(16) float gs[GEMM_BK][GEMM_LD];
    __shared__ __align__(16) float us[GEMM_BK][GEMM_LD];
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    if (m0 >= m) return;
    float acc_g[4][4] = {}, acc_u[4][4] = {};
    for (int k0 = 0; k0 < k; k0 += GEMM_BK) {
        gemm_load_x(x, x_rows, m, k, m0, k0, xs);
        gemm_load_w(g, n, k, n0, k0, gs);
        gemm_load_w(u, n, k, n0, k0, us);
        __syncthreads();
        gemm_step(xs, gs, acc_g);
        gemm_step(xs, us, acc_u);
        __syncthreads();
    }
    const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = m0 + ty * 4 + i;
        if (r >= m) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int c = n0 + tx * 4 + j;
            if (c < n) h[(size_t)r * n + c] = silu(acc_g[i][j]) * acc_u[i][j];
        }
    }
}

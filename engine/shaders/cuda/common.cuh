// Shared helpers for the OneRec CUDA kernels. Every kernel file includes this header;
// the engine hands it to NVRTC as an in-memory header, so the files need no install path.
#pragma once
#include <cuda_fp16.h>

// Values per quantisation block (one f16 scale each), as in engine/src/tensor.rs.
#define QBLOCK 32

// NVRTC has no <math.h>: +inf as a bit pattern.
#define F32_INF __int_as_float(0x7f800000)

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a block of `blockDim.x` threads (a multiple of 32, at most 1024); every
// thread gets the total. `scratch` holds 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -F32_INF;
    return warp_max(v);
}

// Single values of a weight matrix `[rows, cols]` stored row-major, by storage type.
// Quantised layout (engine/src/tensor.rs `DType::matrix_bytes`): quants row-major, then
// one f16 scale per block of 32 values; `s` points at the scales.
__device__ __forceinline__ float load_f32(const void* w, const __half*, size_t i) {
    return static_cast<const float*>(w)[i];
}
__device__ __forceinline__ float load_f16(const void* w, const __half*, size_t i) {
    return __half2float(static_cast<const __half*>(w)[i]);
}
__device__ __forceinline__ float load_bf16(const void* w, const __half*, size_t i) {
    return __uint_as_float((unsigned)static_cast<const unsigned short*>(w)[i] << 16);
}
__device__ __forceinline__ float load_q8(const void* w, const __half* s, size_t i) {
    return (float)static_cast<const signed char*>(w)[i] * __half2float(s[i / QBLOCK]);
}
__device__ __forceinline__ float load_q4(const void* w, const __half* s, size_t i) {
    const unsigned word = static_cast<const unsigned*>(w)[i / 8];
    const int q = (int)((word >> (4 * (i % 8))) & 15u) - 8;
    return (float)q * __half2float(s[i / QBLOCK]);
}

// Maps a float to an unsigned key with the same order as Rust's `f32::total_cmp`.
__device__ __forceinline__ unsigned float_key(float f) {
    const unsigned b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

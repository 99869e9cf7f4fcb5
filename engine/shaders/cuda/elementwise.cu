// Element-wise helpers: residual adds and the f32 -> f16 writes into the KV cache.
// Launch: 256 threads per block, one element per thread.
#include "common.cuh"

extern "C" __global__ void add_assign(float* __restrict__ x, const float* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// Round to nearest even, as `half::f16::from_f32` does.
extern "C" __global__ void f32_to_f16(const float* __restrict__ src, __half* __restrict__ dst, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = __float2half_rn(src[i]);
}

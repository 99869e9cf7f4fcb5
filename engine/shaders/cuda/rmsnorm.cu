// RMSNorm per row: y = x / sqrt(mean(x²) + eps) ⊙ w, with w in f32, f16 or bf16.
// Launch: one block of 256 threads per row.
#include "common.cuh"

template <typename LoadW>
__device__ __forceinline__ void rms_norm_row(const float* __restrict__ x, const void* w, float* __restrict__ y, int cols,
                                             float eps, LoadW load_w) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float v = x[base + c];
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    const float inv = 1.0f / sqrtf(ss / (float)cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) y[base + c] = x[base + c] * (inv * load_w(w, nullptr, c));
}

extern "C" __global__ void __launch_bounds__(256)
    rms_norm_f32(const float* __restrict__ x, const void* w, float* __restrict__ y, int cols, float eps) {
    rms_norm_row(x, w, y, cols, eps, load_f32);
}

extern "C" __global__ void __launch_bounds__(256)
    rms_norm_f16(const float* __restrict__ x, const void* w, float* __restrict__ y, int cols, float eps) {
    rms_norm_row(x, w, y, cols, eps, load_f16);
}

extern "C" __global__ void __launch_bounds__(256)
    rms_norm_bf16(const float* __restrict__ x, const void* w, float* __restrict__ y, int cols, float eps) {
    rms_norm_row(x, w, y, cols, eps, load_bf16);
}

// Row-wise log-softmax: y = x - (max + log Σ exp(x - max)). One block of 256 threads per row.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256)
    log_softmax(const float* __restrict__ x, float* __restrict__ y, int cols) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * cols;
    float mx = -F32_INF;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) mx = fmaxf(mx, x[base + c]);
    mx = block_max(mx, scratch);
    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += expf(x[base + c] - mx);
    sum = block_sum(sum, scratch);
    const float lse = mx + logf(sum);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) y[base + c] = x[base + c] - lse;
}

// Embedding lookups summed: out[r] (+)= table[index[r]], with the table in f32, f16,
// bf16, q8 or q4. The engine launches one kernel per table (codes of each level, positions);
// the first one assigns, the others add, so no zero fill is needed.
// Launch: grid (rows, ceil(cols/256)), 256 threads.
#include "common.cuh"

#define GATHER(NAME, LOAD)                                                                                   \
    extern "C" __global__ void NAME(const void* table, const __half* scales, const int* __restrict__ index, \
                                    float* __restrict__ out, int rows, int cols, int accumulate) {          \
        const int r = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;                                \
        if (c >= cols || r >= rows) return;                                                                 \
        const float v = LOAD(table, scales, (size_t)index[r] * cols + c);                                   \
        float* o = out + (size_t)r * cols + c;                                                              \
        *o = accumulate ? *o + v : v;                                                                       \
    }

GATHER(gather_f32, load_f32)
GATHER(gather_f16, load_f16)
GATHER(gather_bf16, load_bf16)
GATHER(gather_q8, load_q8)
GATHER(gather_q4, load_q4)

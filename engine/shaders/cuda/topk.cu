// Constrained top-B selection on the device (MODEL_SPEC "Constrained session decoding").
//
// Stage 1, topb_rows (one block per beam): the candidates of a beam are the trie
// children of its node that still lead to an eligible item (eligible count under the
// child larger than the items of the beam's session below it); score = beam score +
// log p(code). Keeps the beam's best B (B of its request) in code order.
// Stage 2, topb_groups (one block per request): the best B over its beams' survivors,
// in (beam, code) order; the host sorts those few by score.
// Beam reordering needs no kernel: the KV cache is never copied, each beam keeps the
// cache rows of its ancestry and attention gathers them (attention.cu, `index`).
// Both select by a 4-pass radix select over `float_key(score)`; equal keys are taken
// in index order, which is the tie rule: lower beam, then lower code.
#include "common.cuh"

#define SEL_THREADS 256

// Exclusive prefix sum over the block; `total` gets the block's sum. 32 ints of scratch.
__device__ __forceinline__ int block_exclusive_scan(int v, int* scratch, int* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    int incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    if (lane == 31) scratch[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        int w = lane < warps ? scratch[lane] : 0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int t = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += t;
        }
        scratch[lane] = w;
    }
    __syncthreads();
    const int excl = (warp > 0 ? scratch[warp - 1] : 0) + incl - v;
    *total = scratch[warps - 1];
    __syncthreads();  // scratch is reused by the next call
    return excl;
}

struct Threshold {
    unsigned key;  // the want-th largest key
    int need;      // how many keys equal to `key` are taken (in index order)
    int take_all;  // fewer valid keys than wanted: take every valid one
};

// Radix select of the `want` largest valid keys among items 0..n. `key_at(i, &key)`
// returns whether item i is valid.
template <typename KeyAt>
__device__ __forceinline__ Threshold block_select(int n, int want, KeyAt key_at) {
    __shared__ unsigned hist[256];
    __shared__ unsigned s_prefix, s_mask;
    __shared__ int s_want, s_take_all;
    if (threadIdx.x == 0) {
        s_prefix = 0;
        s_mask = 0;
        s_want = want;
        s_take_all = 0;
    }
    for (int pass = 0; pass < 4; pass++) {
        const int shift = 24 - 8 * pass;
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        const unsigned prefix = s_prefix, mask = s_mask;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            unsigned key;
            if (key_at(i, &key) && (key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            if (pass == 0) {
                unsigned total = 0;
                for (int b = 0; b < 256; b++) total += hist[b];
                s_take_all = total <= (unsigned)want;
            }
            if (!s_take_all) {
                unsigned above = 0;
                const unsigned k = (unsigned)s_want;
                for (int b = 255; b >= 0; b--) {
                    if (above + hist[b] >= k) {
                        s_prefix |= (unsigned)b << shift;
                        s_mask |= 255u << shift;
                        s_want = (int)(k - above);
                        break;
                    }
                    above += hist[b];
                }
            }
        }
        __syncthreads();
        if (s_take_all) break;
    }
    Threshold t;
    t.key = s_prefix;
    t.need = s_want;
    t.take_all = s_take_all;
    __syncthreads();
    return t;
}

// Calls `emit(i, pos)` for every selected item, `pos` counting them in index order.
// Returns the number selected.
template <typename KeyAt, typename Emit>
__device__ __forceinline__ int block_emit(int n, Threshold t, KeyAt key_at, Emit emit) {
    __shared__ int scratch[32];
    int base = 0, eq_before = 0;  // identical in every thread
    for (int chunk = 0; chunk < n; chunk += blockDim.x) {
        const int i = chunk + threadIdx.x;
        unsigned key = 0;
        const bool valid = i < n && key_at(i, &key);
        const bool gt = valid && (t.take_all || key > t.key);
        const bool eq = valid && !t.take_all && key == t.key;
        int total;
        const int excl = block_exclusive_scan((int)gt | ((int)eq << 16), scratch, &total);
        const int room = max(t.need - eq_before, 0);  // equal keys still to take
        const int eq_excl = excl >> 16;
        if (gt || (eq && eq_excl < room)) emit(i, base + (excl & 0xffff) + min(eq_excl, room));
        base += (total & 0xffff) + min(total >> 16, room);
        eq_before += total >> 16;
    }
    return base;
}

// Stage 1. One block per beam `b` (beams of all groups, concatenated): its log-probs
// are row `logp_row[b]`, its request's eligible counts `counts[count_row[b]]`, its
// session's trie nodes at this level `session_nodes[b * session_len ..]` (-1 padded).
// Writes its best `width[b]` candidates in code order: score, code, child node.
extern "C" __global__ void __launch_bounds__(SEL_THREADS)
    topb_rows(const float* __restrict__ logp, int n_codes, const int* __restrict__ logp_row,
              const float* __restrict__ beam_score, const int* __restrict__ node, const int* __restrict__ width,
              const int* __restrict__ child_start, const int* __restrict__ child_code,
              const unsigned* __restrict__ counts, int n_nodes, const int* __restrict__ count_row,
              const int* __restrict__ session_nodes, int session_len, float* __restrict__ out_score,
              int* __restrict__ out_code, int* __restrict__ out_child, int* __restrict__ out_count, int cap) {
    const int b = blockIdx.x;
    const int first = child_start[node[b]], n = child_start[node[b] + 1] - first;
    const unsigned* cnt = counts + (size_t)count_row[b] * n_nodes;
    const int* sess = session_nodes + (size_t)b * session_len;
    const float base_score = beam_score[b];
    const float* lp = logp + (size_t)logp_row[b] * n_codes;
    auto score_at = [&](int i, float* score) -> bool {
        const int child = first + i + 1;  // node of child entry j is j + 1
        unsigned in_session = 0;
        for (int s = 0; s < session_len; s++) in_session += sess[s] == child;
        *score = base_score + lp[child_code[first + i]];
        return cnt[child] > in_session;
    };
    auto key_at = [&](int i, unsigned* key) -> bool {
        float s;
        const bool ok = score_at(i, &s);
        *key = float_key(s);
        return ok;
    };
    const int want = width[b];
    int count = 0;
    if (want > 0) {
        const Threshold t = block_select(n, want, key_at);
        float* os = out_score + (size_t)b * cap;
        int* oc = out_code + (size_t)b * cap;
        int* on = out_child + (size_t)b * cap;
        count = block_emit(n, t, key_at, [&](int i, int pos) {
            float s;
            score_at(i, &s);
            os[pos] = s;
            oc[pos] = child_code[first + i];
            on[pos] = first + i + 1;
        });
    }
    if (threadIdx.x == 0) out_count[b] = count;
}

// Stage 2. One block per group `g` (a request's beams `beam_start[g] .. beam_start[g+1]`):
// its best `group_width[g]` over the stage-1 survivors, in (beam, code) order, packed as
// out[g * (1 + 4 cap)] = count, then per survivor (score bits, beam within the group,
// code, child).
extern "C" __global__ void __launch_bounds__(SEL_THREADS)
    topb_groups(const int* __restrict__ beam_start, const int* __restrict__ group_width,
                const float* __restrict__ in_score, const int* __restrict__ in_code, const int* __restrict__ in_child,
                const int* __restrict__ in_count, int cap, int* __restrict__ out) {
    const int g = blockIdx.x;
    const int beam0 = beam_start[g], n = (beam_start[g + 1] - beam0) * cap;
    auto key_at = [&](int i, unsigned* key) -> bool {
        const int b = beam0 + i / cap, j = i % cap;
        *key = float_key(in_score[(size_t)b * cap + j]);
        return j < in_count[b];
    };
    int* o = out + (size_t)g * (1 + 4 * (size_t)cap);
    const int want = group_width[g];
    int count = 0;
    if (want > 0) {
        const Threshold t = block_select(n, want, key_at);
        count = block_emit(n, t, key_at, [&](int i, int pos) {
            const int b = beam0 + i / cap, j = i % cap;
            const size_t src = (size_t)b * cap + j;
            int* e = o + 1 + 4 * (size_t)pos;
            e[0] = __float_as_int(in_score[src]);
            e[1] = b - beam0;
            e[2] = in_code[src];
            e[3] = in_child[src];
        });
    }
    if (threadIdx.x == 0) o[0] = count;
}

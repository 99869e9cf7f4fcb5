// Sparse MoE routing around the expert-grouped products of matmul.wgsl (GROUPED):
// `route`   p = softmax(router logits), top-k experts per row (ties to the lower index;
//           weights not renormalised), written as routes[r*k + j] and probs[r*k + j];
//           ROUTER (with one weight type of weights.wgsl; d % 4 == 0): the router
//           product x · Wᵣᵀ inside `route` too, in matmul.wgsl's summation order, each
//           row's logits kept in `logits` (one launch instead of two);
// `group`   one workgroup: slots ordered by expert, then by row, so each expert's rows
//           are contiguous; a tile table of at most 32 slots per tile, never straddling
//           experts (read by matmul.wgsl GROUPED);
// `combine` out[r] = Σ_j probs[r*k + j] · expert_out[slot of (r, j)].

#include "grid.wgsl"

struct Params {
    rows: u32,
    n_experts: u32,
    top_k: u32,
    d: u32,
    w_base: u32,  // ROUTER: where the router matrix starts in `w` (weights.wgsl)
    s_base: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if ROUTER
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(9) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> w: array<vec4<u32>>;
#include "weights.wgsl"
#else
@group(0) @binding(1) var<storage, read> logits: array<f32>;
#endif
@group(0) @binding(2) var<storage, read_write> routes: array<u32>;
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;
@group(0) @binding(4) var<storage, read_write> tiles: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> slot_row: array<u32>;
@group(0) @binding(6) var<storage, read_write> slot_of: array<u32>;
#if X4
// d % 4 == 0: `combine` moves 4 values per invocation.
@group(0) @binding(7) var<storage, read_write> expert_out: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> out: array<vec4<f32>>;
#else
@group(0) @binding(7) var<storage, read_write> expert_out: array<f32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;
#endif

const TILE: u32 = 32u;

@compute @workgroup_size(64, 1, 1)
fn route(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = linear_group(wg, nwg) * 64u + lid;
    if (r >= p.rows) {
        return;
    }
    let e = p.n_experts;
    let o = r * e;
#if ROUTER
    // 8 experts at a time, so each load of x serves 8 dot products (experts past the
    // last reread the last one and are not stored).
    for (var e0 = 0u; e0 < e; e0 += 8u) {
        var ex: array<u32, 8>;
        for (var j = 0u; j < 8u; j++) {
            ex[j] = min(e0 + j, e - 1u);
        }
        var lo = vec4<f32>(0.0);
        var hi = vec4<f32>(0.0);
        for (var c = 0u; c < p.d; c += 4u) {
            let xv = x[(r * p.d + c) >> 2u];
            lo += vec4<f32>(dot(xv, w4(p.w_base, p.s_base, p.d, ex[0], c)), dot(xv, w4(p.w_base, p.s_base, p.d, ex[1], c)),
                            dot(xv, w4(p.w_base, p.s_base, p.d, ex[2], c)), dot(xv, w4(p.w_base, p.s_base, p.d, ex[3], c)));
            hi += vec4<f32>(dot(xv, w4(p.w_base, p.s_base, p.d, ex[4], c)), dot(xv, w4(p.w_base, p.s_base, p.d, ex[5], c)),
                            dot(xv, w4(p.w_base, p.s_base, p.d, ex[6], c)), dot(xv, w4(p.w_base, p.s_base, p.d, ex[7], c)));
        }
        for (var j = 0u; j < 4u; j++) {
            if (e0 + j < e) {
                logits[o + e0 + j] = lo[j];
            }
            if (e0 + 4u + j < e) {
                logits[o + e0 + 4u + j] = hi[j];
            }
        }
    }
#endif
    var mx = -3.4028235e38;
    for (var i = 0u; i < e; i++) {
        mx = max(mx, logits[o + i]);
    }
    var sum = 0.0;
    for (var i = 0u; i < e; i++) {
        sum += exp(logits[o + i] - mx);
    }
    for (var j = 0u; j < p.top_k; j++) {
        var best = 0xffffffffu;
        var bp = 0.0;
        for (var i = 0u; i < e; i++) {
            var taken = false;
            for (var t = 0u; t < j; t++) {
                taken = taken || routes[r * p.top_k + t] == i;
            }
            let pi = exp(logits[o + i] - mx) / sum;
            if (!taken && (best == 0xffffffffu || pi > bp)) {
                best = i;
                bp = pi;
            }
        }
        routes[r * p.top_k + j] = best;
        probs[r * p.top_k + j] = bp;
    }
}

var<workgroup> first_slot: array<u32, 256>;

@compute @workgroup_size(64, 1, 1)
fn group(@builtin(local_invocation_index) lid: u32) {
    let n = p.rows * p.top_k;
    // Experts are handled 256 at a time so the prefix fits in workgroup memory.
    var slot0 = 0u;
    var n_tiles = 0u;
    for (var e0 = 0u; e0 < p.n_experts; e0 += 256u) {
        for (var e = e0 + lid; e < min(e0 + 256u, p.n_experts); e += 64u) {
            var c = 0u;
            for (var s = 0u; s < n; s++) {
                c += u32(routes[s] == e);
            }
            first_slot[e - e0] = c;
        }
        workgroupBarrier();
        if (lid == 0u) {
            for (var e = e0; e < min(e0 + 256u, p.n_experts); e++) {
                let c = first_slot[e - e0];
                first_slot[e - e0] = slot0;
                for (var t = 0u; t < c; t += TILE) {
                    tiles[1u + n_tiles] = vec4<u32>(e, slot0 + t, min(TILE, c - t), 0u);
                    n_tiles += 1u;
                }
                slot0 += c;
            }
        }
        workgroupBarrier();
        for (var e = e0 + lid; e < min(e0 + 256u, p.n_experts); e += 64u) {
            var slot = first_slot[e - e0];
            for (var s = 0u; s < n; s++) {
                if (routes[s] == e) {
                    slot_row[slot] = s / p.top_k;
                    slot_of[s] = slot;
                    slot += 1u;
                }
            }
        }
        // Only invocation 0 carries slot0 and n_tiles; the others read first_slot.
        workgroupBarrier();
    }
    if (lid == 0u) {
        tiles[0] = vec4<u32>(n_tiles, slot0, 0u, 0u);
    }
}

@compute @workgroup_size(256, 1, 1)
fn combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wg, nwg) * 256u + lid;
#if X4
    let d = p.d / 4u;
    var acc = vec4<f32>(0.0);
#else
    let d = p.d;
    var acc = 0.0;
#endif
    if (i >= p.rows * d) {
        return;
    }
    let r = i / d;
    let c = i % d;
    for (var j = 0u; j < p.top_k; j++) {
        acc += probs[r * p.top_k + j] * expert_out[slot_of[r * p.top_k + j] * d + c];
    }
    out[i] = acc;
}

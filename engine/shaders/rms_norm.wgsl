// y = x / sqrt(mean(x²) + eps) ⊙ g, one invocation per row: rows are short (d_model) and
// lavapipe runs workgroup barriers slowly, so a barrier-free row loop wins there.
// Defines: the type of g (see weights.wgsl); ADD: first x += r (the residual add that
// precedes every norm of the model), written back to x, in the same pass; ADD + COMBINE:
// r is a MoE layer's output, summed here from its experts' rows as moe.wgsl `combine` sums
// it (r[row] = Σ_j probs[row·k + j] · eo[slot_of[row·k + j]], k = `p.top_k`), so that sum
// needs no launch and no buffer of its own; X4: the row length is a multiple of 4, rows
// move 4 values at a time.

#include "weights.wgsl"
#include "grid.wgsl"

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    w_base: u32,
    s_base: u32,
    top_k: u32,  // COMBINE
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// V: the unit a lane moves, PER values of a row.
#if X4
alias V = vec4<f32>;
const PER: u32 = 4u;
fn hsum(v: V) -> f32 {
    return v.x + v.y + v.z + v.w;
}
// g at columns 4c .. 4c + 4.
fn g(c: u32) -> V {
    return w4(p.w_base, p.s_base, p.cols, 0u, 4u * c);
}
#else
alias V = f32;
const PER: u32 = 1u;
fn hsum(v: V) -> f32 {
    return v;
}
fn g(c: u32) -> V {
    return w1(p.w_base, p.s_base, p.cols, 0u, c);
}
#endif
#if ADD
@group(0) @binding(1) var<storage, read_write> x: array<V>;
@group(0) @binding(4) var<storage, read> r: array<V>;
#if COMBINE
@group(0) @binding(5) var<storage, read> probs: array<f32>;
@group(0) @binding(6) var<storage, read> slot_of: array<u32>;
#endif
#else
@group(0) @binding(1) var<storage, read> x: array<V>;
#endif
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<V>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wg, nwg) * 64u + lid;
    if (row >= p.rows) {
        return;
    }
    let n = p.cols / PER;
    let o = row * n;
    var s = V(0.0);
    for (var c = 0u; c < n; c++) {
#if ADD
#if COMBINE
        var y_r = V(0.0);
        for (var j = 0u; j < p.top_k; j++) {
            let slot = row * p.top_k + j;
            y_r += probs[slot] * r[slot_of[slot] * n + c];
        }
        let v = x[o + c] + y_r;
#else
        let v = x[o + c] + r[o + c];
#endif
        x[o + c] = v;
#else
        let v = x[o + c];
#endif
        s += v * v;
    }
    let inv = 1.0 / sqrt(hsum(s) / f32(p.cols) + p.eps);
    for (var c = 0u; c < n; c++) {
        y[o + c] = x[o + c] * (inv * g(c));
    }
}

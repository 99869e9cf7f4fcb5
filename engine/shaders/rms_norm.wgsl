// y = x / sqrt(mean(x²) + eps) ⊙ g, one workgroup per row.
// Defines: the type of g (see weights.wgsl).

#include "weights.wgsl"
#include "grid.wgsl"

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    w_base: u32,
    s_base: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wg, nwg);
    // Rows past the end still take part in the barriers below; they only skip the work.
    let live = row < p.rows;
    let o = min(row, p.rows - 1u) * p.cols;
    var s = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let v = x[o + c];
        s += v * v;
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            partial[lid] += partial[lid + half];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(partial[0] / f32(p.cols) + p.eps);
    if (!live) {
        return;
    }
    for (var c = lid; c < p.cols; c += WG) {
        y[o + c] = x[o + c] * (inv * w1(p.w_base, p.s_base, p.cols, 0u, c));
    }
}

// y = x / sqrt(mean(x²) + eps) ⊙ g, one invocation per row: rows are short (d_model) and
// lavapipe runs workgroup barriers slowly, so a barrier-free row loop wins there.
// Defines: the type of g (see weights.wgsl); ADD: first x += r (the residual add that
// precedes every norm of the model), written back to x, in the same pass; X4: the row
// length is a multiple of 4, rows move 4 values at a time.

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
#if X4
// cols % 4 == 0: rows moved 16 bytes at a time (lavapipe splits a lane's scalar loads).
#if ADD
@group(0) @binding(1) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> r: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
#endif
@group(0) @binding(3) var<storage, read_write> y: array<vec4<f32>>;
#else
#if ADD
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read> r: array<f32>;
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
#endif
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#endif
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wg, nwg) * 64u + lid;
    if (row >= p.rows) {
        return;
    }
#if X4
    let n = p.cols / 4u;
    let o = row * n;
    var s4 = vec4<f32>(0.0);
    for (var c = 0u; c < n; c++) {
#if ADD
        let v = x[o + c] + r[o + c];
        x[o + c] = v;
#else
        let v = x[o + c];
#endif
        s4 += v * v;
    }
    let s = s4.x + s4.y + s4.z + s4.w;
    let inv = 1.0 / sqrt(s / f32(p.cols) + p.eps);
    for (var c = 0u; c < n; c++) {
        y[o + c] = x[o + c] * (inv * w4(p.w_base, p.s_base, p.cols, 0u, 4u * c));
    }
#else
    let o = row * p.cols;
    var s = 0.0;
    for (var c = 0u; c < p.cols; c++) {
#if ADD
        let v = x[o + c] + r[o + c];
        x[o + c] = v;
#else
        let v = x[o + c];
#endif
        s += v * v;
    }
    let inv = 1.0 / sqrt(s / f32(p.cols) + p.eps);
    for (var c = 0u; c < p.cols; c++) {
        y[o + c] = x[o + c] * (inv * w1(p.w_base, p.s_base, p.cols, 0u, c));
    }
#endif
}

// Row-wise log-softmax, one invocation per row (barrier-free: lavapipe runs workgroup
// barriers slowly): y = x - (max + ln Σ exp(x - max)).
// X4: the row length is a multiple of 4 and rows move 4 values at a time.

#include "grid.wgsl"

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// V: the unit a lane moves, PER values of a row.
#if X4
alias V = vec4<f32>;
const PER: u32 = 4u;
fn hmax(v: V) -> f32 {
    return max(max(v.x, v.y), max(v.z, v.w));
}
fn hsum(v: V) -> f32 {
    return v.x + v.y + v.z + v.w;
}
#else
alias V = f32;
const PER: u32 = 1u;
fn hmax(v: V) -> f32 {
    return v;
}
fn hsum(v: V) -> f32 {
    return v;
}
#endif
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read_write> y: array<V>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wg, nwg) * 64u + lid;
    if (row >= p.rows) {
        return;
    }
    let n = p.cols / PER;
    let o = row * n;
    var m = V(-3.4028235e38);
    for (var c = 0u; c < n; c++) {
        m = max(m, x[o + c]);
    }
    let mx = hmax(m);
    var s = V(0.0);
    for (var c = 0u; c < n; c++) {
        s += exp(x[o + c] - mx);
    }
    let lse = mx + log(hsum(s));
    for (var c = 0u; c < n; c++) {
        y[o + c] = x[o + c] - lse;
    }
}

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
#if X4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
#endif

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wg, nwg) * 64u + lid;
    if (row >= p.rows) {
        return;
    }
#if X4
    let n = p.cols / 4u;
    let o = row * n;
    var m4 = vec4<f32>(-3.4028235e38);
    for (var c = 0u; c < n; c++) {
        m4 = max(m4, x[o + c]);
    }
    let mx = max(max(m4.x, m4.y), max(m4.z, m4.w));
    var s4 = vec4<f32>(0.0);
    for (var c = 0u; c < n; c++) {
        s4 += exp(x[o + c] - mx);
    }
    let lse = mx + log(s4.x + s4.y + s4.z + s4.w);
    for (var c = 0u; c < n; c++) {
        y[o + c] = x[o + c] - lse;
    }
#else
    let o = row * p.cols;
    var mx = -3.4028235e38;
    for (var c = 0u; c < p.cols; c++) {
        mx = max(mx, x[o + c]);
    }
    var s = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        s += exp(x[o + c] - mx);
    }
    let lse = mx + log(s);
    for (var c = 0u; c < p.cols; c++) {
        y[o + c] = x[o + c] - lse;
    }
#endif
}

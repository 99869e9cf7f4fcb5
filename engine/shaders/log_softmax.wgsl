// Row-wise log-softmax, one workgroup per row: y = x - (max + ln Σ exp(x - max)).

#include "grid.wgsl"

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wg, nwg);
    let live = row < p.rows;
    let o = min(row, p.rows - 1u) * p.cols;
    var m = -3.4028235e38;
    for (var c = lid; c < p.cols; c += WG) {
        m = max(m, x[o + c]);
    }
    red[lid] = m;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            red[lid] = max(red[lid], red[lid + half]);
        }
        workgroupBarrier();
    }
    let mx = red[0];
    workgroupBarrier();
    var s = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        s += exp(x[o + c] - mx);
    }
    red[lid] = s;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            red[lid] += red[lid + half];
        }
        workgroupBarrier();
    }
    let lse = mx + log(red[0]);
    if (!live) {
        return;
    }
    for (var c = lid; c < p.cols; c += WG) {
        y[o + c] = x[o + c] - lse;
    }
}

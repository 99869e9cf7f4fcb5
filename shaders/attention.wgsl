// Multi-head scaled dot-product attention of query rows over selected key/value rows,
// in three barrier-free passes (lavapipe runs workgroup barriers very slowly, GPUs run
// these passes fine): `scores` (one invocation per row, head and key), `softmax` (one per
// row and head, in place) and `weighted` (one per row and output column).
// Defines: SPANS (row r attends keys spans[r].x .. spans[r].x + spans[r].y: encoder and
// cross-attention) or GATHER (row r attends keys index[r * stride ..][..per_row]: the
// decoder's self-attention through each beam's ancestry in the KV cache).
// KV_F16: keys and values are an f16 KV cache (kv_cache.wgsl), widened on load.
// Scores live in `s` as [rows, heads, max_keys].
#if KV_F16
enable f16;
#endif

#include "grid.wgsl"

struct Params {
    rows: u32,
    d: u32,
    n_heads: u32,
    head_dim: u32,
    per_row: u32,   // GATHER: keys per row
    max_keys: u32,  // stride of a score row
    scale: f32,
    stride: u32,    // GATHER: distance between the index lists of two rows
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
#if KV_F16
@group(0) @binding(2) var<storage, read> k: array<f16>;
@group(0) @binding(3) var<storage, read> v: array<f16>;
#else
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
#endif
#if SPANS
@group(0) @binding(4) var<storage, read> spans: array<vec2<u32>>;
#endif
#if GATHER
@group(0) @binding(4) var<storage, read> index: array<u32>;
#endif
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> s: array<f32>;

fn n_keys(r: u32) -> u32 {
#if SPANS
    return spans[r].y;
#else
    return p.per_row;
#endif
}

fn key_of(r: u32, j: u32) -> u32 {
#if SPANS
    return spans[r].x + j;
#else
    return index[r * p.stride + j];
#endif
}

@compute @workgroup_size(64, 1, 1)
fn scores(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wg, nwg) * 64u + lid;
    if (i >= p.rows * p.n_heads * p.max_keys) {
        return;
    }
    let j = i % p.max_keys;
    let rh = i / p.max_keys;
    let r = rh / p.n_heads;
    let h = rh % p.n_heads;
    if (j >= n_keys(r)) {
        return;
    }
    let hd = p.head_dim;
    let qo = r * p.d + h * hd;
    let ko = key_of(r, j) * p.d + h * hd;
    var acc = 0.0;
    for (var e = 0u; e < hd; e++) {
        acc += q[qo + e] * f32(k[ko + e]);
    }
    s[i] = acc * p.scale;
}

@compute @workgroup_size(64, 1, 1)
fn softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rh = linear_group(wg, nwg) * 64u + lid;
    if (rh >= p.rows * p.n_heads) {
        return;
    }
    let n = n_keys(rh / p.n_heads);
    let o = rh * p.max_keys;
    var m = -3.4028235e38;
    for (var j = 0u; j < n; j++) {
        m = max(m, s[o + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < n; j++) {
        let e = exp(s[o + j] - m);
        s[o + j] = e;
        sum += e;
    }
    let inv = 1.0 / sum;
    for (var j = 0u; j < n; j++) {
        s[o + j] *= inv;
    }
}

@compute @workgroup_size(64, 1, 1)
fn weighted(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wg, nwg) * 64u + lid;
    if (i >= p.rows * p.d) {
        return;
    }
    let r = i / p.d;
    let c = i % p.d;
    let h = c / p.head_dim;
    let n = n_keys(r);
    let o = (r * p.n_heads + h) * p.max_keys;
    var acc = 0.0;
    for (var j = 0u; j < n; j++) {
        acc += s[o + j] * f32(v[key_of(r, j) * p.d + c]);
    }
    out[i] = acc;
}

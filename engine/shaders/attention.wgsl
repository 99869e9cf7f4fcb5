// Multi-head scaled dot-product attention of query rows over selected key/value rows,
// in three barrier-free passes (lavapipe runs workgroup barriers very slowly, GPUs run
// these passes fine): `scores` (one invocation per tile of 4 rows, head and group of 4
// keys), `softmax` (one per row and head, in place) and `weighted` (one per tile of 4
// rows and group of `p.cols` output columns). Where a tile's rows share their keys (the
// beams of one user in cross-attention) both products are register tiles, as in
// matmul.wgsl: each key or value loaded serves 4 rows, each query row 4 keys.
// `fused`: all three in one pass, one invocation per row and head, for short key lists
// (at most FUSED_KEYS, head size a multiple of 4 up to FUSED_HD): the decoder's
// self-attention, where three launches would cost more than the work.
// Defines: SPANS (row r attends keys spans[r].x .. spans[r].x + spans[r].y: encoder and
// cross-attention) or GATHER (row r attends keys index[r * stride ..][..per_row]: the
// decoder's self-attention through each beam's ancestry in the KV cache).
// KV_F16: keys and values are an f16 KV cache (kv_cache.wgsl), decoded on load.
// Matrices are bound as vec4 arrays, so that where the head size is a multiple of 4 a
// lane fetches 4 values at once (what makes lavapipe fast); other sizes read one value
// at a time from the same bindings. Scores live in `s` as [rows, heads, max_keys], with
// max_keys a multiple of 4 (the host pads it) so that every pass moves them 4 at a time:
// lavapipe splits a lane's scalar loads and stores one by one. Past a row's last key a
// score group holds zeros after `softmax`. OUT4: the output is written 4 values at a
// time (the head size and d are multiples of 4).

#include "grid.wgsl"

struct Params {
    rows: u32,
    d: u32,
    n_heads: u32,
    head_dim: u32,
    per_row: u32,   // GATHER: keys per row
    max_keys: u32,  // stride of a score row, a multiple of 4
    scale: f32,
    stride: u32,    // GATHER: distance between the index lists of two rows
    cols: u32,      // output columns per `weighted` invocation: 8 or 4 when vec4 loads apply, else 1
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
#if KV_F16
// 8 halves per element.
@group(0) @binding(2) var<storage, read> k: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<u32>>;
#else
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
#endif
#if SPANS
@group(0) @binding(4) var<storage, read> spans: array<vec2<u32>>;
#endif
#if GATHER
@group(0) @binding(4) var<storage, read> index: array<u32>;
#endif
#if OUT4
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
#else
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
#endif
@group(0) @binding(6) var<storage, read_write> s: array<vec4<f32>>;

// out[i .. i + 4] (i % 4 == 0 with OUT4), or the first `n` of them.
fn store_out(i: u32, val: vec4<f32>, n: u32) {
#if OUT4
    out[i >> 2u] = val;
#else
    for (var e = 0u; e < n; e++) {
        out[i + e] = val[e];
    }
#endif
}

fn q1(i: u32) -> f32 {
    return q[i >> 2u][i & 3u];
}

// `i % 4 == 0` for the 4-value loads.
fn q4(i: u32) -> vec4<f32> {
    return q[i >> 2u];
}

#if KV_F16
fn half_pair(w: u32, i: u32) -> f32 {
    return unpack2x16float(w)[i & 1u];
}
fn k1(i: u32) -> f32 {
    return half_pair(k[i >> 3u][(i >> 1u) & 3u], i);
}
fn v1(i: u32) -> f32 {
    return half_pair(v[i >> 3u][(i >> 1u) & 3u], i);
}
fn k4(i: u32) -> vec4<f32> {
    let w = k[i >> 3u];
    return select(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
                  vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)), (i & 4u) != 0u);
}
fn v4(i: u32) -> vec4<f32> {
    let w = v[i >> 3u];
    return select(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
                  vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)), (i & 4u) != 0u);
}
// 8 values from i (i % 8 == 0): one 16-byte load.
fn k8(i: u32) -> array<vec4<f32>, 2> {
    let w = k[i >> 3u];
    return array<vec4<f32>, 2>(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
                               vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)));
}
fn v8(i: u32) -> array<vec4<f32>, 2> {
    let w = v[i >> 3u];
    return array<vec4<f32>, 2>(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
                               vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)));
}
#else
fn k1(i: u32) -> f32 {
    return k[i >> 2u][i & 3u];
}
fn v1(i: u32) -> f32 {
    return v[i >> 2u][i & 3u];
}
fn k4(i: u32) -> vec4<f32> {
    return k[i >> 2u];
}
fn v4(i: u32) -> vec4<f32> {
    return v[i >> 2u];
}
fn k8(i: u32) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(k[i >> 2u], k[(i >> 2u) + 1u]);
}
fn v8(i: u32) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(v[i >> 2u], v[(i >> 2u) + 1u]);
}
#endif

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

// Whether 4-value loads apply: every head starts on a multiple of 4.
fn by4() -> bool {
    return ((p.head_dim | p.d) & 3u) == 0u;
}

// Rows come in tiles of TILE; where a tile's rows read the same keys (the beams of one
// user in cross-attention), each key or value loaded serves all of them.
const TILE: u32 = 4u;

fn tile_rows(r0: u32) -> u32 {
    return min(TILE, p.rows - r0);
}

// Whether the rows of the tile at r0 attend exactly the same keys.
fn shared_keys(r0: u32) -> bool {
#if SPANS
    if (tile_rows(r0) < TILE) {
        return false;
    }
    let a = spans[r0];
    return all(spans[r0 + 1u] == a) && all(spans[r0 + 2u] == a) && all(spans[r0 + 3u] == a);
#else
    return false;
#endif
}

// q row segment at qo · k row segment at ko, over one head.
fn dot_qk(qo: u32, ko: u32) -> f32 {
    var acc = 0.0;
    if (by4()) {
        for (var e = 0u; e < p.head_dim; e += 4u) {
            acc += dot(q4(qo + e), k4(ko + e));
        }
    } else {
        for (var e = 0u; e < p.head_dim; e++) {
            acc += q1(qo + e) * k1(ko + e);
        }
    }
    return acc;
}

// Keys per `scores` invocation.
const KEYS: u32 = 4u;

@compute @workgroup_size(64, 1, 1)
fn scores(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wg, nwg) * 64u + lid;
    let tiles = (p.rows + TILE - 1u) / TILE;
    let groups = (p.max_keys + KEYS - 1u) / KEYS;
    if (i >= tiles * p.n_heads * groups) {
        return;
    }
    let j0 = (i % groups) * KEYS;
    let th = i / groups;
    let r0 = (th / p.n_heads) * TILE;
    let h = th % p.n_heads;
    let hd = p.head_dim;
    if (shared_keys(r0)) {
        let n = n_keys(r0);
        if (j0 >= n) {
            return;
        }
        // Keys past the end reuse the last one and are not stored.
        let ko = vec4<u32>(key_of(r0, j0), key_of(r0, min(j0 + 1u, n - 1u)),
                           key_of(r0, min(j0 + 2u, n - 1u)), key_of(r0, min(j0 + 3u, n - 1u))) * p.d + h * hd;
        let qo = r0 * p.d + h * hd;
        var acc: array<vec4<f32>, 4>;
        if (p.cols == 8u) {
            // Head size and d multiples of 8: 8 values per key load.
            for (var e = 0u; e < hd; e += 8u) {
                let ka = k8(ko.x + e);
                let kb = k8(ko.y + e);
                let kc = k8(ko.z + e);
                let kd = k8(ko.w + e);
                for (var t = 0u; t < TILE; t++) {
                    let q0 = q4(qo + t * p.d + e);
                    let q1_ = q4(qo + t * p.d + e + 4u);
                    acc[t] += vec4<f32>(dot(q0, ka[0]) + dot(q1_, ka[1]), dot(q0, kb[0]) + dot(q1_, kb[1]),
                                        dot(q0, kc[0]) + dot(q1_, kc[1]), dot(q0, kd[0]) + dot(q1_, kd[1]));
                }
            }
        } else if (by4()) {
            for (var e = 0u; e < hd; e += 4u) {
                let ka = k4(ko.x + e);
                let kb = k4(ko.y + e);
                let kc = k4(ko.z + e);
                let kd = k4(ko.w + e);
                for (var t = 0u; t < TILE; t++) {
                    let qv = q4(qo + t * p.d + e);
                    acc[t] += vec4<f32>(dot(qv, ka), dot(qv, kb), dot(qv, kc), dot(qv, kd));
                }
            }
        } else {
            for (var e = 0u; e < hd; e++) {
                let kv = vec4<f32>(k1(ko.x + e), k1(ko.y + e), k1(ko.z + e), k1(ko.w + e));
                for (var t = 0u; t < TILE; t++) {
                    acc[t] += q1(qo + t * p.d + e) * kv;
                }
            }
        }
        // Scores past the last key are left for `softmax` to zero.
        for (var t = 0u; t < TILE; t++) {
            s[(((r0 + t) * p.n_heads + h) * p.max_keys + j0) >> 2u] = acc[t] * p.scale;
        }
        return;
    }
    for (var t = 0u; t < tile_rows(r0); t++) {
        let r = r0 + t;
        let n = n_keys(r);
        if (j0 >= n) {
            continue;
        }
        var acc = vec4<f32>(0.0);
        for (var c = 0u; c < min(KEYS, n - j0); c++) {
            acc[c] = dot_qk(r * p.d + h * hd, key_of(r, j0 + c) * p.d + h * hd);
        }
        s[((r * p.n_heads + h) * p.max_keys + j0) >> 2u] = acc * p.scale;
    }
}

@compute @workgroup_size(64, 1, 1)
fn softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rh = linear_group(wg, nwg) * 64u + lid;
    if (rh >= p.rows * p.n_heads) {
        return;
    }
    let n = n_keys(rh / p.n_heads);
    let o = (rh * p.max_keys) >> 2u;
    let groups = (n + 3u) >> 2u;
    // Lane offsets within a group of 4: lanes at or past the row's n keys are masked.
    let live = vec4<u32>(0u, 1u, 2u, 3u);
    let lowest = vec4<f32>(-3.4028235e38);
    var m = lowest;
    for (var g = 0u; g < groups; g++) {
        m = max(m, select(lowest, s[o + g], g * 4u + live < vec4<u32>(n)));
    }
    let mx = max(max(m.x, m.y), max(m.z, m.w));
    var sum = vec4<f32>(0.0);
    for (var g = 0u; g < groups; g++) {
        let e = select(vec4<f32>(0.0), exp(s[o + g] - mx), g * 4u + live < vec4<u32>(n));
        s[o + g] = e;
        sum += e;
    }
    let inv = 1.0 / (sum.x + sum.y + sum.z + sum.w);
    for (var g = 0u; g < groups; g++) {
        s[o + g] *= inv;
    }
}

// Score j of the row whose scores start at o (o % 4 == 0).
fn score(o: u32, j: u32) -> f32 {
    return s[(o + j) >> 2u][j & 3u];
}

// Σ_j s[o + j] · v[key(r, j) · d + c ..][..4] (or the one value at c).
fn weighted_row(r: u32, o: u32, c: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    let n = n_keys(r);
    if (p.cols != 1u) {
        for (var j = 0u; j < n; j++) {
            acc += score(o, j) * v4(key_of(r, j) * p.d + c);
        }
    } else {
        for (var j = 0u; j < n; j++) {
            acc.x += score(o, j) * v1(key_of(r, j) * p.d + c);
        }
    }
    return acc;
}

@compute @workgroup_size(64, 1, 1)
fn weighted(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wg, nwg) * 64u + lid;
    let tiles = (p.rows + TILE - 1u) / TILE;
    let groups = p.d / p.cols;
    if (i >= tiles * groups) {
        return;
    }
    let r0 = (i / groups) * TILE;
    let c = (i % groups) * p.cols;
    let h = c / p.head_dim;
    // Columns c .. c+3 in acc, c+4 .. c+7 in acc2 (p.cols == 8).
    var acc: array<vec4<f32>, 4>;
    var acc2: array<vec4<f32>, 4>;
    if (shared_keys(r0)) {
        let n = n_keys(r0);
        let o = (r0 * p.n_heads + h) * p.max_keys;
        let hs = p.n_heads * p.max_keys; // from one row's scores to the next row's
        if (p.cols == 8u) {
            for (var j = 0u; j < n; j++) {
                let vv = v8(key_of(r0, j) * p.d + c);
                let va = vv[0];
                let vb = vv[1];
                let sa = score(o, j);
                let sb = score(o + hs, j);
                let sc = score(o + 2u * hs, j);
                let sd = score(o + 3u * hs, j);
                acc[0] += sa * va;
                acc[1] += sb * va;
                acc[2] += sc * va;
                acc[3] += sd * va;
                acc2[0] += sa * vb;
                acc2[1] += sb * vb;
                acc2[2] += sc * vb;
                acc2[3] += sd * vb;
            }
        } else if (p.cols == 4u) {
            for (var j = 0u; j < n; j++) {
                let vv = v4(key_of(r0, j) * p.d + c);
                acc[0] += score(o, j) * vv;
                acc[1] += score(o + hs, j) * vv;
                acc[2] += score(o + 2u * hs, j) * vv;
                acc[3] += score(o + 3u * hs, j) * vv;
            }
        } else {
            for (var j = 0u; j < n; j++) {
                let vv = v1(key_of(r0, j) * p.d + c);
                acc[0].x += score(o, j) * vv;
                acc[1].x += score(o + hs, j) * vv;
                acc[2].x += score(o + 2u * hs, j) * vv;
                acc[3].x += score(o + 3u * hs, j) * vv;
            }
        }
    } else {
        for (var t = 0u; t < tile_rows(r0); t++) {
            let r = r0 + t;
            let o = (r * p.n_heads + h) * p.max_keys;
            acc[t] = weighted_row(r, o, c);
            if (p.cols == 8u) {
                acc2[t] = weighted_row(r, o, c + 4u);
            }
        }
    }
    for (var t = 0u; t < tile_rows(r0); t++) {
        let oo = (r0 + t) * p.d + c;
        store_out(oo, acc[t], min(p.cols, 4u));
        if (p.cols == 8u) {
            store_out(oo + 4u, acc2[t], 4u);
        }
    }
}

const FUSED_KEYS: u32 = 32u;
const FUSED_HD: u32 = 64u;

@compute @workgroup_size(64, 1, 1)
fn fused(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rh = linear_group(wg, nwg) * 64u + lid;
    if (rh >= p.rows * p.n_heads) {
        return;
    }
    let r = rh / p.n_heads;
    let h = rh % p.n_heads;
    let hd = p.head_dim;
    let n = min(n_keys(r), FUSED_KEYS);
    let qo = r * p.d + h * hd;
    var sc: array<f32, FUSED_KEYS>;
    var m = -3.4028235e38;
    for (var j = 0u; j < n; j++) {
        var acc = 0.0;
        let ko = key_of(r, j) * p.d + h * hd;
        for (var e = 0u; e < hd; e += 4u) {
            acc += dot(q4(qo + e), k4(ko + e));
        }
        sc[j] = acc * p.scale;
        m = max(m, sc[j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < n; j++) {
        sc[j] = exp(sc[j] - m);
        sum += sc[j];
    }
    var acc: array<vec4<f32>, 16>; // FUSED_HD / 4
    for (var j = 0u; j < n; j++) {
        let vo = key_of(r, j) * p.d + h * hd;
        for (var e = 0u; e < hd / 4u; e++) {
            acc[e] += sc[j] * v4(vo + 4u * e);
        }
    }
    let inv = 1.0 / sum;
    for (var e = 0u; e < hd; e += 4u) {
        store_out(qo + e, acc[e >> 2u] * inv, 4u);
    }
}

// Multi-head scaled dot-product attention of query rows over selected key/value rows,
// in three barrier-free passes (lavapipe runs workgroup barriers very slowly, GPUs run
// these passes fine): `scores` (one invocation per tile of 4 rows, head and group of 8
// keys), `softmax` (one per tile and head, in place) and `weighted` (one per tile and
// group of `p.wcols` output columns). Where a tile's rows share their keys (the beams of
// one user in cross-attention) both products are register tiles, as in matmul.wgsl: each
// key or value loaded serves 4 rows, each query row 8 keys.
// `fused`: all three in one pass, one invocation per row and head, for short key lists
// (at most FUSED_KEYS, head size a multiple of 4 up to FUSED_HD): the decoder's
// self-attention, where three launches would cost more than the work.
// Defines: SPANS (row r attends keys spans[r].x .. spans[r].x + spans[r].y: encoder and
// cross-attention) or GATHER (row r attends keys index[r * stride ..][..per_row]: the
// decoder's self-attention through each beam's ancestry in the KV cache).
// KV_F16: keys and values are an f16 KV cache (kv_cache.wgsl), decoded on load.
// Matrices are bound as vec4 arrays, so that where the head size is a multiple of 4 a
// lane fetches 4 values at once (what makes lavapipe fast: it splits every per-lane load
// into one load per lane and component); other sizes read one value at a time from the
// same bindings. Scores live in `s` by tile: s[(tile * heads + h) * (max_keys + 1) + j]
// holds key j's scores of the tile's 4 rows, so one 16-byte load gives `weighted` the
// weights of all 4 rows; the slot after the last key holds the rows' 1 / Σ exp, which
// `weighted` applies at the end. Past a row's last key its component is 0 after
// `softmax`. OUT4: the output is written 4 values at a time (the head size and d are
// multiples of 4).

#include "grid.wgsl"

struct Params {
    rows: u32,
    d: u32,
    n_heads: u32,
    head_dim: u32,
    per_row: u32,   // GATHER: keys per row
    max_keys: u32,  // most keys of any row; a (tile, head) holds max_keys + 1 score slots
    scale: f32,
    stride: u32,    // GATHER: distance between the index lists of two rows
    cols: u32,      // 8 or 4 where the head size and d allow loads that wide, else 1
    wcols: u32,     // output columns per `weighted` invocation: 16, 8, 4 or 1
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
const KEYS: u32 = 8u;

// Where the scores of a (tile, head) start in `s`.
fn score_base(tile: u32, h: u32) -> u32 {
    return (tile * p.n_heads + h) * (p.max_keys + 1u);
}

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
    let o = score_base(th / p.n_heads, h) + j0;
    if (shared_keys(r0)) {
        let n = n_keys(r0);
        if (j0 >= n) {
            return;
        }
        // Keys past the end reuse the last one and are not stored.
        // Shared keys are one span (SPANS): its first key is read once.
        let first = key_of(r0, 0u);
        var ko: array<u32, KEYS>;
        for (var c = 0u; c < KEYS; c++) {
            ko[c] = (first + min(j0 + c, n - 1u)) * p.d + h * hd;
        }
        let qo = r0 * p.d + h * hd;
        // acc[c][t]: key j0 + c, row r0 + t. Each query load serves KEYS keys, each key
        // load the tile's 4 rows.
        var acc: array<vec4<f32>, KEYS>;
        if (p.cols == 8u) {
            // Head size and d multiples of 8: 8 values per key load.
            for (var e = 0u; e < hd; e += 8u) {
                var qa: array<vec4<f32>, 4>;
                var qb: array<vec4<f32>, 4>;
                for (var t = 0u; t < TILE; t++) {
                    qa[t] = q4(qo + t * p.d + e);
                    qb[t] = q4(qo + t * p.d + e + 4u);
                }
                for (var c = 0u; c < KEYS; c++) {
                    let kk = k8(ko[c] + e);
                    acc[c] += vec4<f32>(dot(qa[0], kk[0]) + dot(qb[0], kk[1]), dot(qa[1], kk[0]) + dot(qb[1], kk[1]),
                                        dot(qa[2], kk[0]) + dot(qb[2], kk[1]), dot(qa[3], kk[0]) + dot(qb[3], kk[1]));
                }
            }
        } else if (by4()) {
            for (var e = 0u; e < hd; e += 4u) {
                var qv: array<vec4<f32>, 4>;
                for (var t = 0u; t < TILE; t++) {
                    qv[t] = q4(qo + t * p.d + e);
                }
                for (var c = 0u; c < KEYS; c++) {
                    let kk = k4(ko[c] + e);
                    acc[c] += vec4<f32>(dot(qv[0], kk), dot(qv[1], kk), dot(qv[2], kk), dot(qv[3], kk));
                }
            }
        } else {
            for (var e = 0u; e < hd; e++) {
                let qv = vec4<f32>(q1(qo + e), q1(qo + p.d + e), q1(qo + 2u * p.d + e), q1(qo + 3u * p.d + e));
                for (var c = 0u; c < KEYS; c++) {
                    acc[c] += qv * k1(ko[c] + e);
                }
            }
        }
        for (var c = 0u; c < KEYS; c++) {
            if (j0 + c < n) {
                s[o + c] = acc[c] * p.scale;
            }
        }
        return;
    }
    // Rows with keys of their own: a component past its row's keys stays 0.
    var acc: array<vec4<f32>, KEYS>;
    var most = 0u;
    for (var t = 0u; t < TILE; t++) {
        if (t < tile_rows(r0)) {
            let r = r0 + t;
            let n = n_keys(r);
            most = max(most, n);
            for (var c = 0u; c < KEYS; c++) {
                if (j0 + c < n) {
                    acc[c][t] = dot_qk(r * p.d + h * hd, key_of(r, j0 + c) * p.d + h * hd);
                }
            }
        }
    }
    for (var c = 0u; c < KEYS; c++) {
        if (j0 + c < most) {
            s[o + c] = acc[c] * p.scale;
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let th = linear_group(wg, nwg) * 64u + lid;
    let tiles = (p.rows + TILE - 1u) / TILE;
    if (th >= tiles * p.n_heads) {
        return;
    }
    let r0 = (th / p.n_heads) * TILE;
    // Each row's key count (0 past the last row): components at or past it are masked.
    var n = vec4<u32>(0u);
    for (var t = 0u; t < TILE; t++) {
        if (t < tile_rows(r0)) {
            n[t] = n_keys(r0 + t);
        }
    }
    let most = max(max(n.x, n.y), max(n.z, n.w));
    let o = score_base(th / p.n_heads, th % p.n_heads);
    let lowest = vec4<f32>(-3.4028235e38);
    var m = lowest;
    for (var j = 0u; j < most; j++) {
        m = max(m, select(lowest, s[o + j], vec4<u32>(j) < n));
    }
    var sum = vec4<f32>(0.0);
    for (var j = 0u; j < most; j++) {
        let e = select(vec4<f32>(0.0), exp(s[o + j] - m), vec4<u32>(j) < n);
        s[o + j] = e;
        sum += e;
    }
    s[o + p.max_keys] = select(vec4<f32>(0.0), 1.0 / sum, n > vec4<u32>(0u));
}

// Σ_j w_j · v[key(r, j) · d + c ..][..4] (or the one value at c) for row t of the tile
// whose weights start at o.
fn weighted_row(r: u32, t: u32, o: u32, c: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    let n = n_keys(r);
    if (p.cols != 1u) {
        for (var j = 0u; j < n; j++) {
            acc += s[o + j][t] * v4(key_of(r, j) * p.d + c);
        }
    } else {
        for (var j = 0u; j < n; j++) {
            acc.x += s[o + j][t] * v1(key_of(r, j) * p.d + c);
        }
    }
    return acc;
}

@compute @workgroup_size(64, 1, 1)
fn weighted(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wg, nwg) * 64u + lid;
    let tiles = (p.rows + TILE - 1u) / TILE;
    let groups = p.d / p.wcols;
    if (i >= tiles * groups) {
        return;
    }
    let tile = i / groups;
    let r0 = tile * TILE;
    let c = (i % groups) * p.wcols;
    let h = c / p.head_dim;
    let o = score_base(tile, h);
    // acc[4g + t]: columns c + 4g .. c + 4g + 3 of the tile's row t. Every loop over g or t
    // has a constant length, so the array stays in registers.
    var acc: array<vec4<f32>, 16>;
    if (shared_keys(r0)) {
        let n = n_keys(r0);
        // Shared keys are one span (SPANS): key j is its first + j, so the span is read
        // once, not once per key (a third load per key on lavapipe).
        let first = key_of(r0, 0u);
        if (p.wcols == 16u) {
            // Two 16-byte value loads and one weight load serve 64 products.
            for (var j = 0u; j < n; j++) {
                let vo = (first + j) * p.d + c;
                let va = v8(vo);
                let vb = v8(vo + 8u);
                let w = s[o + j];
                for (var t = 0u; t < TILE; t++) {
                    acc[t] += w[t] * va[0];
                    acc[4u + t] += w[t] * va[1];
                    acc[8u + t] += w[t] * vb[0];
                    acc[12u + t] += w[t] * vb[1];
                }
            }
        } else if (p.wcols == 8u) {
            for (var j = 0u; j < n; j++) {
                let vv = v8((first + j) * p.d + c);
                let w = s[o + j];
                for (var t = 0u; t < TILE; t++) {
                    acc[t] += w[t] * vv[0];
                    acc[4u + t] += w[t] * vv[1];
                }
            }
        } else if (p.wcols == 4u) {
            for (var j = 0u; j < n; j++) {
                let vv = v4((first + j) * p.d + c);
                let w = s[o + j];
                for (var t = 0u; t < TILE; t++) {
                    acc[t] += w[t] * vv;
                }
            }
        } else {
            for (var j = 0u; j < n; j++) {
                let vv = v1((first + j) * p.d + c);
                let w = s[o + j];
                for (var t = 0u; t < TILE; t++) {
                    acc[t].x += w[t] * vv;
                }
            }
        }
    } else {
        for (var t = 0u; t < TILE; t++) {
            if (t < tile_rows(r0)) {
                for (var g = 0u; g < 4u; g++) {
                    if (g * 4u < p.wcols) {
                        acc[4u * g + t] = weighted_row(r0 + t, t, o, c + 4u * g);
                    }
                }
            }
        }
    }
    let inv = s[o + p.max_keys];
    for (var t = 0u; t < TILE; t++) {
        if (t < tile_rows(r0)) {
            let oo = (r0 + t) * p.d + c;
            for (var g = 0u; g < 4u; g++) {
                if (g * 4u < p.wcols) {
                    store_out(oo + 4u * g, acc[4u * g + t] * inv[t], min(p.wcols, 4u));
                }
            }
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
    if (p.cols == 8u) {
        fused8(r, h, n);
        return;
    }
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

// `fused` where the head size and d are multiples of 8: one pass over the keys with a
// running max (each key's index read once), 16-byte key and value loads (8 halves of an
// f16 cache), and the query and the output in registers: loops of constant length whose
// chunks past the head size are skipped, so no array is indexed by a runtime value
// (lavapipe moves such arrays through memory lane by lane).
fn fused8(r: u32, h: u32, n: u32) {
    let hd = p.head_dim;
    let qo = r * p.d + h * hd;
    var qa: array<vec4<f32>, 8>; // FUSED_HD / 8
    var qb: array<vec4<f32>, 8>;
    for (var c = 0u; c < FUSED_HD / 8u; c++) {
        if (c * 8u < hd) {
            qa[c] = q4(qo + c * 8u);
            qb[c] = q4(qo + c * 8u + 4u);
        }
    }
    var m = -3.4028235e38;
    var sum = 0.0;
    var acc: array<vec4<f32>, 16>; // FUSED_HD / 4
    for (var j = 0u; j < n; j++) {
        let ko = key_of(r, j) * p.d + h * hd;
        var sj = 0.0;
        for (var c = 0u; c < FUSED_HD / 8u; c++) {
            if (c * 8u < hd) {
                let kk = k8(ko + c * 8u);
                sj += dot(qa[c], kk[0]) + dot(qb[c], kk[1]);
            }
        }
        sj *= p.scale;
        let mn = max(m, sj);
        let f = exp(m - mn);
        let e = exp(sj - mn);
        m = mn;
        sum = sum * f + e;
        for (var c = 0u; c < FUSED_HD / 8u; c++) {
            if (c * 8u < hd) {
                let vv = v8(ko + c * 8u);
                acc[2u * c] = acc[2u * c] * f + e * vv[0];
                acc[2u * c + 1u] = acc[2u * c + 1u] * f + e * vv[1];
            }
        }
    }
    let inv = 1.0 / sum;
    for (var c = 0u; c < FUSED_HD / 8u; c++) {
        if (c * 8u < hd) {
            store_out(qo + c * 8u, acc[2u * c] * inv, 4u);
            store_out(qo + c * 8u + 4u, acc[2u * c + 1u] * inv, 4u);
        }
    }
}

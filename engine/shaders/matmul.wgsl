// y = x · Wᵀ with W stored [n, k] in its file type (weights.wgsl), register-tiled:
// each invocation computes a TM×4 block of y, a workgroup of 8×WG_Y a 32×32 tile.
//
// Defines: one weight type (see weights.wgsl); GROUPED for MoE expert-grouped products:
// workgroup row `t` takes tile `t` of a tile table (expert, first slot, row count) built
// by moe.wgsl `group`, so each expert's weights are read once for all of its tokens.
// Grouped input rows are token rows looked up through `slot_row` when `p.gather_x` is
// set (the gate/up products), else slot rows (the down product); output rows are slots.
// Y4: y written 4 values at a time (the host sets it where every column count, offset and
// stride is a multiple of 4).
// GROUPED + SWIGLU: the gate and up products at once, y = silu(x·Wgᵀ) ⊙ (x·Wuᵀ), with
// the up matrices in the same binding at `u_base` (one read of x, no gate/up buffers).
// KV: a layer's key and value projections at once (Backend::project_kv), V's matrix in
// the same binding at `u_base`: the first ceil(n / 32) workgroup columns compute keys,
// the rest values, each written straight into its cache (`y`, `y_v`) from row `y_row0`
// (KV_F16: an f16 cache, two halves per word, rounded as kv_cache.wgsl rounds). n is a
// multiple of 4. KV + Q (Backend::project_qkv): a third run of column tiles computes the
// queries with the matrix at `q_base`, into `y_q` [m, n] (f32).

#include "weights.wgsl"

struct Params {
    m: u32,          // rows of x (ungrouped) or slots (grouped)
    n: u32,          // rows of this weight part = columns written
    k: u32,
    y_stride: u32,   // row stride of y
    y_col: u32,      // first column of y written by this part
    w_base: u32,
    s_base: u32,
    w_estride: u32,  // expert stride of w_base (grouped)
    s_estride: u32,  // expert stride of s_base (grouped)
    gather_x: u32,
    only_expert: u32, // grouped: tiles of other experts skip (0xffffffff: none skip)
    u_base: u32,      // SWIGLU: w_base of the up matrices
    u_sbase: u32,     // SWIGLU: s_base of the up matrices
    y_row0: u32,      // KV: first cache row written
    q_base: u32,      // KV + Q: w_base of the query matrix
    q_sbase: u32,     // KV + Q: s_base of the query matrix
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
#if KV
#if KV_F16
@group(0) @binding(3) var<storage, read_write> y: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read_write> y_v: array<vec2<u32>>;
#else
@group(0) @binding(3) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> y_v: array<vec4<f32>>;
#endif
#if Q
@group(0) @binding(7) var<storage, read_write> y_q: array<vec4<f32>>;
#endif
#else
#if Y4
// Rows of y, its first column and the columns written are multiples of 4: one 16-byte
// store per row of a block instead of four.
@group(0) @binding(3) var<storage, read_write> y: array<vec4<f32>>;
#else
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#endif
#endif
#if GROUPED
// tiles[0].x = tile count; tile t is tiles[1 + t] = (expert, first slot, rows, 0).
@group(0) @binding(4) var<storage, read> tiles: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> slot_row: array<u32>;
#endif

// 8 rows per invocation, 4 invocation rows per workgroup: a 32-row tile. Each weight
// load serves 8 rows: on lavapipe the loads, not the multiplies, bound these loops (8
// rows against 4: the 1024³ product +24%, the medium model's request −7%, the small
// model's MoE layer +23%, benches/wgpu_request.rs).
const TM: u32 = 8u;
const WG_Y: u32 = 4u;
const TN: u32 = 4u;

// Only used when k % 4 == 0.
fn x4(row: u32, col: u32) -> vec4<f32> {
    return x[(row * p.k + col) >> 2u];
}

fn x1(i: u32) -> f32 {
    return x[i >> 2u][i & 3u];
}

#if KV
// Values i .. i + 4 of the key (part 0) or value (part 1) cache.
fn store_kv(part: u32, i: u32, v: vec4<f32>) {
#if KV_F16
    let h = vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
    if (part == 0u) {
        y[i >> 2u] = h;
    } else {
        y_v[i >> 2u] = h;
    }
#else
    if (part == 0u) {
        y[i >> 2u] = v;
    } else {
        y_v[i >> 2u] = v;
    }
#endif
}
#endif

@compute @workgroup_size(8, WG_Y, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
#if KV
    // Column tiles of K (part 0), then V (1), then with Q the queries (2).
    let col_tiles = (p.n + 8u * TN - 1u) / (8u * TN);
    let part = min(wg.x / col_tiles, 2u);
    let col0 = ((wg.x - part * col_tiles) * 8u + lid.x) * TN;
#else
    let col0 = (wg.x * 8u + lid.x) * TN;
#endif
    if (col0 >= p.n) {
        return;
    }
    var base = p.w_base;
    var sbase = p.s_base;
#if KV
    if (part == 1u) {
        base = p.u_base;
        sbase = p.u_sbase;
    }
    if (part == 2u) {
        base = p.q_base;
        sbase = p.q_sbase;
    }
#endif
    var ubase = p.u_base;
    var usbase = p.u_sbase;
    var xr: array<u32, TM>;
    var yr: array<u32, TM>;
    var ok: array<bool, TM>;
#if GROUPED
    let t = wg.y;
    if (t >= tiles[0].x) {
        return;
    }
    let tile = tiles[1u + t];
    if (p.only_expert != 0xffffffffu && tile.x != p.only_expert) {
        return;
    }
    // Experts get few tokens each: invocations whose rows all lie past the tile's end
    // would only recompute its last row.
    if (lid.y * TM >= tile.z) {
        return;
    }
    base += tile.x * p.w_estride;
    sbase += tile.x * p.s_estride;
    ubase += tile.x * p.w_estride;
    usbase += tile.x * p.s_estride;
    for (var i = 0u; i < TM; i++) {
        let r = lid.y * TM + i;
        ok[i] = r < tile.z;
        let slot = tile.y + min(r, tile.z - 1u);
        yr[i] = slot;
        xr[i] = select(slot, slot_row[slot], p.gather_x != 0u);
    }
#else
    if ((wg.y * WG_Y + lid.y) * TM >= p.m) {
        return;
    }
    for (var i = 0u; i < TM; i++) {
        let r = (wg.y * WG_Y + lid.y) * TM + i;
        ok[i] = r < p.m;
        yr[i] = min(r, p.m - 1u);
        xr[i] = yr[i];
    }
#endif
    // Columns past the end read the last column and are not stored.
    let c0 = col0;
    let c1 = min(col0 + 1u, p.n - 1u);
    let c2 = min(col0 + 2u, p.n - 1u);
    let c3 = min(col0 + 3u, p.n - 1u);
    var acc: array<vec4<f32>, TM>;
#if SWIGLU
    var acc_u: array<vec4<f32>, TM>;
#endif
    let k4 = select(0u, p.k / 4u, (p.k & 3u) == 0u);
    for (var kk = 0u; kk < k4; kk++) {
        let c = kk * 4u;
        let wa = w4(base, sbase, p.k, c0, c);
        let wb = w4(base, sbase, p.k, c1, c);
        let wc = w4(base, sbase, p.k, c2, c);
        let wd = w4(base, sbase, p.k, c3, c);
#if SWIGLU
        let ua = w4(ubase, usbase, p.k, c0, c);
        let ub = w4(ubase, usbase, p.k, c1, c);
        let uc = w4(ubase, usbase, p.k, c2, c);
        let ud = w4(ubase, usbase, p.k, c3, c);
#endif
        for (var i = 0u; i < TM; i++) {
            let xv = x4(xr[i], c);
            acc[i] += vec4<f32>(dot(xv, wa), dot(xv, wb), dot(xv, wc), dot(xv, wd));
#if SWIGLU
            acc_u[i] += vec4<f32>(dot(xv, ua), dot(xv, ub), dot(xv, uc), dot(xv, ud));
#endif
        }
    }
    for (var c = k4 * 4u; c < p.k; c++) {
        let wv = vec4<f32>(w1(base, sbase, p.k, c0, c), w1(base, sbase, p.k, c1, c), w1(base, sbase, p.k, c2, c), w1(base, sbase, p.k, c3, c));
#if SWIGLU
        let uv = vec4<f32>(w1(ubase, usbase, p.k, c0, c), w1(ubase, usbase, p.k, c1, c), w1(ubase, usbase, p.k, c2, c), w1(ubase, usbase, p.k, c3, c));
#endif
        for (var i = 0u; i < TM; i++) {
            acc[i] += x1(xr[i] * p.k + c) * wv;
#if SWIGLU
            acc_u[i] += x1(xr[i] * p.k + c) * uv;
#endif
        }
    }
#if SWIGLU
    for (var i = 0u; i < TM; i++) {
        acc[i] = acc[i] / (1.0 + exp(-acc[i])) * acc_u[i];
    }
#endif
#if KV
#if Q
    if (part == 2u) {
        for (var i = 0u; i < TM; i++) {
            if (ok[i]) {
                y_q[(yr[i] * p.y_stride + col0) >> 2u] = acc[i];
            }
        }
        return;
    }
#endif
    for (var i = 0u; i < TM; i++) {
        if (ok[i]) {
            store_kv(part, (p.y_row0 + yr[i]) * p.y_stride + col0, acc[i]);
        }
    }
#else
#if Y4
    for (var i = 0u; i < TM; i++) {
        if (ok[i]) {
            y[(yr[i] * p.y_stride + p.y_col + col0) >> 2u] = acc[i];
        }
    }
#else
    let ncols = min(TN, p.n - col0);
    for (var i = 0u; i < TM; i++) {
        if (!ok[i]) {
            continue;
        }
        let o = yr[i] * p.y_stride + p.y_col + col0;
        for (var j = 0u; j < ncols; j++) {
            y[o + j] = acc[i][j];
        }
    }
#endif
#endif
}

// Weight decoding, included by every kernel that reads a model weight.
//
// Weights live in a `w: array<vec4<u32>>` binding in their file type (vec4 so that a
// lane fetches 16 bytes at once, which is what makes lavapipe fast); exactly one of W_F32,
// W_F16, W_BF16, W_Q8, W_Q4 is defined. `base` is where the matrix starts (in elements
// for float types, in words for the quants of Q8/Q4), `sbase` where its f16 block
// scales start (in halves, Q8/Q4 only), `k` the row length. Layout of Q8_0/Q4_0:
// engine/src/tensor.rs `DType::matrix_bytes`.
//
// `w4` reads 4 consecutive values of a row starting at a column that is a multiple of 4;
// callers only use it when `k % 4 == 0`, and matrices start on 16 bytes (the host
// ensures it), so such a start is aligned to the 4 (f32) or 2 (f16/bf16) words read.

fn wword(i: u32) -> u32 {
    return w[i >> 2u][i & 3u];
}

#if W_F32
fn w1(base: u32, sbase: u32, k: u32, row: u32, col: u32) -> f32 {
    return bitcast<f32>(wword(base + row * k + col));
}
fn w4(base: u32, sbase: u32, k: u32, row: u32, col: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(w[(base + row * k + col) >> 2u]);
}
#endif

#if W_F16
fn w1(base: u32, sbase: u32, k: u32, row: u32, col: u32) -> f32 {
    let i = base + row * k + col;
    return unpack2x16float(wword(i >> 1u))[i & 1u];
}
fn w4(base: u32, sbase: u32, k: u32, row: u32, col: u32) -> vec4<f32> {
    let i = (base + row * k + col) >> 1u;
    let v = w[i >> 2u];
    let pair = select(v.xy, v.zw, (i & 2u) != 0u);
    return vec4<f32>(unpack2x16float(pair.x), unpack2x16float(pair.y));
}
#endif

#if W_BF16
fn bf16_pair(v: u32) -> vec2<f32> {
    return bitcast<vec2<f32>>(vec2<u32>(v << 16u, v & 0xffff0000u));
}
fn w1(base: u32, sbase: u32, k: u32, row: u32, col: u32) -> f32 {
    let i = base + row * k + col;
    return bf16_pair(wword(i >> 1u))[i & 1u];
}
fn w4(base: u32, sbase: u32, k: u32, row: u32, col: u32) -> vec4<f32> {
    let i = (base + row * k + col) >> 1u;
    let v = w[i >> 2u];
    let pair = select(v.xy, v.zw, (i & 2u) != 0u);
    return vec4<f32>(bf16_pair(pair.x), bf16_pair(pair.y));
}
#endif

#if W_Q8
fn scale_of(sbase: u32, q: u32) -> f32 {
    let h = sbase + q / 32u;
    return unpack2x16float(wword(h >> 1u))[h & 1u];
}
fn w1(base: u32, sbase: u32, k: u32, row: u32, col: u32) -> f32 {
    let q = row * k + col;
    let byte = (wword(base + (q >> 2u)) >> (8u * (q & 3u))) & 0xffu;
    return f32(bitcast<i32>(byte << 24u) >> 24u) * scale_of(sbase, q);
}
fn w4(base: u32, sbase: u32, k: u32, row: u32, col: u32) -> vec4<f32> {
    let q = row * k + col;
    let v = wword(base + (q >> 2u));
    let s = vec4<i32>(bitcast<i32>(v << 24u), bitcast<i32>(v << 16u), bitcast<i32>(v << 8u), bitcast<i32>(v));
    return vec4<f32>(s >> vec4<u32>(24u)) * scale_of(sbase, q);
}
#endif

#if W_Q4
fn scale_of(sbase: u32, q: u32) -> f32 {
    let h = sbase + q / 32u;
    return unpack2x16float(wword(h >> 1u))[h & 1u];
}
fn w1(base: u32, sbase: u32, k: u32, row: u32, col: u32) -> f32 {
    let q = row * k + col;
    let nib = (wword(base + (q >> 3u)) >> (4u * (q & 7u))) & 0xfu;
    return (f32(nib) - 8.0) * scale_of(sbase, q);
}
fn w4(base: u32, sbase: u32, k: u32, row: u32, col: u32) -> vec4<f32> {
    let q = row * k + col;
    let v = wword(base + (q >> 3u)) >> (4u * (q & 4u));
    let n = vec4<u32>(v, v >> 4u, v >> 8u, v >> 12u) & vec4<u32>(0xfu);
    return (vec4<f32>(n) - 8.0) * scale_of(sbase, q);
}
#endif

// Embedding lookups: out[r] (+)= table[index[r]] for the rows of one table part
// (rows part_row0 .. part_row0 + part_rows of the full table).
// Defines: the table type (see weights.wgsl).

#include "weights.wgsl"
#include "grid.wgsl"

struct Params {
    rows: u32,
    cols: u32,
    part_row0: u32,
    part_rows: u32,
    w_base: u32,
    s_base: u32,
    accumulate: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> index: array<u32>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wg, nwg) * 256u + lid;
    if (i >= p.rows * p.cols) {
        return;
    }
    let r = i / p.cols;
    let c = i % p.cols;
    let t = index[r];
    if (t < p.part_row0 || t >= p.part_row0 + p.part_rows) {
        return;
    }
    let v = w1(p.w_base, p.s_base, p.cols, t - p.part_row0, c);
    if (p.accumulate != 0u) {
        out[i] += v;
    } else {
        out[i] = v;
    }
}

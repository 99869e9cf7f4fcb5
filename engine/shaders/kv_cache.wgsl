// Key/value cache rows in f16 (only built where the device has SHADER_F16): `store`
// converts new f32 rows into the cache, one invocation per element (X4: per 4 elements).
// Attention reads the cache through attention.wgsl's KV_F16 specialization.
enable f16;

#include "grid.wgsl"

struct Params {
    n: u32,     // elements to store
    offset: u32, // first cache element written
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if X4
// n and offset are multiples of 4: 4 values per invocation, packed into two words.
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec2<u32>>;
#else
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f16>;
#endif

@compute @workgroup_size(256, 1, 1)
fn store(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wg, nwg) * 256u + lid;
#if X4
    if (i >= p.n / 4u) {
        return;
    }
    let v = src[i];
    dst[p.offset / 4u + i] = vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
#else
    if (i >= p.n) {
        return;
    }
    dst[p.offset + i] = f16(src[i]);
#endif
}

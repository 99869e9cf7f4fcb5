// Large launches are folded into 2-D grids (at most 65535 workgroups per dimension);
// this recovers the linear workgroup index.
fn linear_group(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

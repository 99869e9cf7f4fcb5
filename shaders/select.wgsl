// Constrained top-B selection of (beam, code) pairs (MODEL_SPEC "Constrained session
// decoding"), in two entry points:
// `keys` one workgroup per beam: for every child of the beam's trie node, whether it is
//        allowed (eligible items under it exceed the beam's own session items under it)
//        and, if so, the order-preserving key of score + log p(code); 0 marks "not
//        allowed". Keys are laid out beam-major, children in code order, so a key's index
//        orders ties by (beam, code) as the contract asks.
// `top`  one workgroup per request: radix select of the `width` largest keys (ties to
//        the lower index), compaction, then a rank sort, best first.

struct Params {
    n_beams: u32,
    levels: u32,
    level: u32,
    codebook: u32,
    n_groups: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Beam {
    score: f32,
    node: u32,
    sess_off: u32,
    sess_len: u32,
    key_off: u32,   // first key of this beam (absolute)
    logp_row: u32,
    counts_off: u32,
    _pad: u32,
}

struct Group {
    key_off: u32,   // first key of the group (absolute)
    n_keys: u32,
    beam0: u32,     // first beam of the group in `beams`
    n_beams: u32,
    width: u32,
    out_off: u32,   // first output slot
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> beams: array<Beam>;
@group(0) @binding(2) var<storage, read> child_start: array<u32>;
@group(0) @binding(3) var<storage, read> child_code: array<u32>;
@group(0) @binding(4) var<storage, read> item_path: array<u32>;
@group(0) @binding(5) var<storage, read> counts: array<u32>;
@group(0) @binding(6) var<storage, read> sessions: array<u32>;
@group(0) @binding(7) var<storage, read> logp: array<f32>;
@group(0) @binding(8) var<storage, read_write> keys: array<u32>;
@group(0) @binding(9) var<storage, read> groups: array<Group>;
// out[0 .. n_groups] = (count, 0, 0, 0); candidate i of a group at out[n_groups + out_off + i]
// = (score bits, beam within the group, code, child); scratch holds (key, index) pairs.
@group(0) @binding(10) var<storage, read_write> out: array<vec4<u32>>;
@group(0) @binding(11) var<storage, read_write> scratch: array<vec2<u32>>;

fn order_key(s: f32) -> u32 {
    let u = bitcast<u32>(s);
    return select(u | 0x80000000u, ~u, (u >> 31u) == 1u);
}

fn key_score(k: u32) -> u32 {
    return select(~k, k & 0x7fffffffu, (k >> 31u) == 1u);
}

@compute @workgroup_size(64, 1, 1)
fn keys_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.x + wg.y * nwg.x;
    if (b >= p.n_beams) {
        return;
    }
    let beam = beams[b];
    let s = child_start[beam.node];
    let e = child_start[beam.node + 1u];
    for (var j = s + lid; j < e; j += 64u) {
        let child = j + 1u;
        var in_session = 0u;
        for (var t = 0u; t < beam.sess_len; t++) {
            in_session += u32(item_path[sessions[beam.sess_off + t] * p.levels + p.level] == child);
        }
        var key = 0u;
        if (counts[beam.counts_off + child] > in_session) {
            key = order_key(beam.score + logp[beam.logp_row * p.codebook + child_code[j]]);
        }
        keys[beam.key_off + (j - s)] = key;
    }
}

const WG: u32 = 256u;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> state: array<u32, 4>; // prefix, need, tie count, selected count
var<workgroup> n_sel: atomic<u32>;
// Values every invocation branches on, read back with workgroupUniformLoad.
var<workgroup> u_total: u32;
var<workgroup> u_more_ties: u32;

// Histogram of digit `shift` over keys (or, in the tie phase, indices of keys equal to
// `tie_key`) that match `prefix` under `mask`; then invocation 0 finds the bucket holding
// the need-th element, from the top for keys (largest first), from the bottom for
// indices (smallest first).
fn radix_pass(lid: u32, g: Group, shift: u32, mask: u32, ties: bool, tie_key: u32) {
    atomicStore(&hist[lid], 0u);
    workgroupBarrier();
    let prefix = state[0];
    for (var i = lid; i < g.n_keys; i += WG) {
        let key = keys[g.key_off + i];
        if (key == 0u) {
            continue;
        }
        if (ties) {
            if (key == tie_key && (i & mask) == prefix) {
                atomicAdd(&hist[(i >> shift) & 255u], 1u);
            }
        } else if ((key & mask) == prefix) {
            atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        var need = state[1];
        var cum = 0u;
        for (var t = 0u; t < 256u; t++) {
            let d = select(255u - t, t, ties);
            let c = atomicLoad(&hist[d]);
            if (cum + c >= need) {
                state[0] = prefix | (d << shift);
                state[1] = need - cum;
                state[2] = c;
                break;
            }
            cum += c;
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256, 1, 1)
fn top_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = groups[wg.x];
    // Count the allowed candidates.
    if (lid == 0u) {
        atomicStore(&n_sel, 0u);
    }
    workgroupBarrier();
    var mine = 0u;
    for (var i = lid; i < g.n_keys; i += WG) {
        mine += u32(keys[g.key_off + i] != 0u);
    }
    atomicAdd(&n_sel, mine);
    workgroupBarrier();
    if (lid == 0u) {
        u_total = atomicLoad(&n_sel);
    }
    let total = workgroupUniformLoad(&u_total);
    let take = min(total, g.width);
    // Threshold: the take-th largest key T, and how many keys equal to T are taken.
    var t_key = 0u;
    var t_index = 0xffffffffu;
    if (take > 0u && take < total) {
        if (lid == 0u) {
            state[0] = 0u;
            state[1] = take;
        }
        workgroupBarrier();
        var mask = 0u;
        for (var shift = 24; shift >= 0; shift -= 8) {
            radix_pass(lid, g, u32(shift), mask, false, 0u);
            mask |= 255u << u32(shift);
        }
        t_key = state[0];
        if (lid == 0u) {
            u_more_ties = u32(state[1] < state[2]);
        }
        // Fewer ties taken than exist: find the index of the last tie taken.
        if (workgroupUniformLoad(&u_more_ties) != 0u) {
            if (lid == 0u) {
                state[0] = 0u;
            }
            workgroupBarrier();
            var imask = 0u;
            for (var shift = 24; shift >= 0; shift -= 8) {
                radix_pass(lid, g, u32(shift), imask, true, t_key);
                imask |= 255u << u32(shift);
            }
            t_index = state[0];
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        atomicStore(&n_sel, 0u);
    }
    workgroupBarrier();
    // Compaction (in any order) of the chosen (key, index) pairs.
    if (take > 0u) {
        for (var i = lid; i < g.n_keys; i += WG) {
            let key = keys[g.key_off + i];
            if (key != 0u && (key > t_key || (key == t_key && i <= t_index))) {
                let slot = atomicAdd(&n_sel, 1u);
                scratch[g.out_off + slot] = vec2<u32>(key, i);
            }
        }
    }
    storageBarrier();
    workgroupBarrier();
    let n = atomicLoad(&n_sel);
    // Rank sort: larger key first, then smaller index.
    for (var a = lid; a < n; a += WG) {
        let ka = scratch[g.out_off + a];
        var rank = 0u;
        for (var b = 0u; b < n; b++) {
            let kb = scratch[g.out_off + b];
            rank += u32(kb.x > ka.x || (kb.x == ka.x && kb.y < ka.y));
        }
        // Which beam holds index ka.y: the last beam whose first key is <= it.
        var lo = 0u;
        var hi = g.n_beams;
        while (hi - lo > 1u) {
            let mid = (lo + hi) / 2u;
            if (beams[g.beam0 + mid].key_off - g.key_off <= ka.y) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let beam = beams[g.beam0 + lo];
        let j = child_start[beam.node] + (ka.y - (beam.key_off - g.key_off));
        out[p.n_groups + g.out_off + rank] = vec4<u32>(key_score(ka.x), lo, child_code[j], j + 1u);
    }
    if (lid == 0u) {
        out[wg.x] = vec4<u32>(n, 0u, 0u, 0u);
    }
}

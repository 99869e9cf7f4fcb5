// The constrained session beam search on the device (MODEL_SPEC "Constrained session
// decoding"), one scored step in four passes over resident state, nothing read back:
// `keys_main`    one workgroup per (beam row, request): for every child of the beam's trie
//                node, the order-preserving key of score + log p(code) where the child is
//                allowed (eligible items under it exceed the beam's own session items
//                under it), else 0. A request's keys are row-major, `fanout` slots per
//                row, children in code order, so a key's index orders ties by (beam, code).
// `top_main`     one workgroup per request: radix select of the `width` largest keys (ties
//                to the lower index) and their compaction; writes the request's number of
//                live beams.
// `rank_main`    one invocation per (chosen pair, request): rank sort; writes each
//                survivor (score, parent row, code, child node or, at the last level,
//                item) to its row of the next position.
// `advance_main` one invocation per (next row, request): the survivor's beam (score,
//                trie node, session), its code and its ancestry, into the other half of
//                the double-buffered state.
// A beam row is [score bits, trie node, session items...] (`beam_stride` words); the
// ancestry of row r is anc[r * positions ..] (see engine/src/backend/beams.rs).

struct Params {
    level: u32,
    levels: u32,
    codebook: u32,
    fanout: u32,
    t: u32,
    positions: u32,
    beam_stride: u32,
    sess_len: u32,      // items each live beam's session holds at this step
    last_level: u32,    // 1 at the item's last code: the session gains the item
    trie_code: u32,     // offsets of the arrays packed in `trie`
    trie_path: u32,
    trie_leaf: u32,
}

struct Group {
    row0: u32,          // rows of this step
    n: u32,
    next_row0: u32,     // rows of the next position
    next_n: u32,
    width: u32,
    key_off: u32,
    counts_off: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> groups: array<Group>;
@group(0) @binding(2) var<storage, read_write> alive: array<u32>;
// [child_start (nodes + 1) | child_code | item_path (items x levels) | leaf_item (nodes)]
@group(0) @binding(3) var<storage, read> trie: array<u32>;
@group(0) @binding(4) var<storage, read> counts: array<u32>;
@group(0) @binding(5) var<storage, read> logp: array<f32>;
@group(0) @binding(6) var<storage, read_write> keys: array<u32>;
@group(0) @binding(7) var<storage, read> beam_cur: array<u32>;
@group(0) @binding(8) var<storage, read_write> scratch: array<vec2<u32>>;
// (score bits, parent row, code, child node or item) at each next row
@group(0) @binding(9) var<storage, read_write> chosen: array<vec4<u32>>;
@group(0) @binding(10) var<storage, read_write> beam_next: array<u32>;
@group(0) @binding(11) var<storage, read_write> codes_next: array<u32>;
@group(0) @binding(12) var<storage, read> anc_cur: array<u32>;
@group(0) @binding(13) var<storage, read_write> anc_next: array<u32>;

fn order_key(s: f32) -> u32 {
    let u = bitcast<u32>(s);
    return select(u | 0x80000000u, ~u, (u >> 31u) == 1u);
}

fn key_score(k: u32) -> u32 {
    return select(~k, k & 0x7fffffffu, (k >> 31u) == 1u);
}

@compute @workgroup_size(64, 1, 1)
fn keys_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = groups[wg.y];
    let i = wg.x;
    if (i >= g.n) {
        return;
    }
    let row = g.row0 + i;
    let base = row * p.beam_stride;
    var s = 0u;
    var e = 0u;
    if (i < alive[wg.y]) {
        let node = beam_cur[base + 1u];
        s = trie[node];
        e = trie[node + 1u];
    }
    let score = bitcast<f32>(beam_cur[base]);
    let out0 = g.key_off + i * p.fanout;
    for (var jj = lid; jj < p.fanout; jj += 64u) {
        var key = 0u;
        let j = s + jj;
        if (j < e) {
            let child = j + 1u;
            var in_session = 0u;
            for (var q = 0u; q < p.sess_len; q++) {
                let item = beam_cur[base + 2u + q];
                in_session += u32(trie[p.trie_path + item * p.levels + p.level] == child);
            }
            if (counts[g.counts_off + child] > in_session) {
                key = order_key(score + logp[row * p.codebook + trie[p.trie_code + j]]);
            }
        }
        keys[out0 + jj] = key;
    }
}

const WG: u32 = 256u;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> state: array<u32, 4>; // prefix, need, tie count
var<workgroup> n_sel: atomic<u32>;
// Values every invocation branches on, read back with workgroupUniformLoad.
var<workgroup> u_total: u32;
var<workgroup> u_more_ties: u32;

// Histogram of digit `shift` over keys (or, in the tie phase, indices of keys equal to
// `tie_key`) that match `prefix` under `mask`; then invocation 0 finds the bucket holding
// the need-th element, from the top for keys (largest first), from the bottom for
// indices (smallest first).
fn radix_pass(lid: u32, g: Group, n_keys: u32, shift: u32, mask: u32, ties: bool, tie_key: u32) {
    atomicStore(&hist[lid], 0u);
    workgroupBarrier();
    let prefix = state[0];
    for (var i = lid; i < n_keys; i += WG) {
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
        let need = state[1];
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
    let n_keys = g.n * p.fanout;
    // Count the allowed candidates.
    if (lid == 0u) {
        atomicStore(&n_sel, 0u);
    }
    workgroupBarrier();
    var mine = 0u;
    for (var i = lid; i < n_keys; i += WG) {
        mine += u32(keys[g.key_off + i] != 0u);
    }
    atomicAdd(&n_sel, mine);
    workgroupBarrier();
    if (lid == 0u) {
        u_total = atomicLoad(&n_sel);
    }
    let total = workgroupUniformLoad(&u_total);
    let take = min(total, min(g.width, g.next_n));
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
            radix_pass(lid, g, n_keys, u32(shift), mask, false, 0u);
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
                radix_pass(lid, g, n_keys, u32(shift), imask, true, t_key);
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
        for (var i = lid; i < n_keys; i += WG) {
            let key = keys[g.key_off + i];
            if (key != 0u && (key > t_key || (key == t_key && i <= t_index))) {
                let slot = atomicAdd(&n_sel, 1u);
                scratch[g.next_row0 + slot] = vec2<u32>(key, i);
            }
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        alive[wg.x] = atomicLoad(&n_sel);
    }
}

// One invocation per chosen pair of a request: its rank (larger key first, then smaller
// index) by counting the pairs ahead of it, and the survivor written at that rank. A
// dispatch of its own: one workgroup sorting 4096 pairs alone left some ranks unwritten on
// lavapipe (issue 11: the "no item" sentinel reached the host at beam >= ~3980), and
// the boundary between dispatches makes the compacted pairs visible everywhere.
@compute @workgroup_size(64, 1, 1)
fn rank_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = groups[wg.y];
    let n = min(alive[wg.y], g.next_n);
    let a = wg.x * 64u + lid;
    if (a >= n) {
        return;
    }
    let ka = scratch[g.next_row0 + a];
    var rank = 0u;
    for (var b = 0u; b < n; b++) {
        let kb = scratch[g.next_row0 + b];
        rank += u32(kb.x > ka.x || (kb.x == ka.x && kb.y < ka.y));
    }
    let parent = g.row0 + ka.y / p.fanout;
    let j = trie[beam_cur[parent * p.beam_stride + 1u]] + ka.y % p.fanout;
    var tail = j + 1u;
    if (p.last_level != 0u) {
        tail = trie[p.trie_leaf + tail];
    }
    chosen[g.next_row0 + rank] = vec4<u32>(key_score(ka.x), parent, trie[p.trie_code + j], tail);
}

@compute @workgroup_size(64, 1, 1)
fn advance_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg.x * 64u + lid;
    if (r >= alive[wg.y]) {
        return;
    }
    let out = groups[wg.y].next_row0 + r;
    let c = chosen[out];
    let pb = c.y * p.beam_stride;
    let ob = out * p.beam_stride;
    beam_next[ob] = c.x;
    beam_next[ob + 1u] = select(c.w, 0u, p.last_level != 0u);
    for (var q = 0u; q < p.sess_len; q++) {
        beam_next[ob + 2u + q] = beam_cur[pb + 2u + q];
    }
    if (p.last_level != 0u) {
        beam_next[ob + 2u + p.sess_len] = c.w;
    }
    codes_next[out] = c.z;
    for (var q = 0u; q <= p.t; q++) {
        anc_next[out * p.positions + q] = anc_cur[c.y * p.positions + q];
    }
}

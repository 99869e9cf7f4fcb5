//! Byte-level mutations in the style of libFuzzer's and AFL's havoc stage, plus one that
//! rewrites a decimal number (the files under test are mostly JSON headers).

use crate::rng::Rng;

/// Values that sit on the edges parsers and size arithmetic get wrong.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    8,
    31,
    32,
    63,
    64,
    127,
    128,
    255,
    256,
    4096,
    65535,
    65536,
    (1 << 20) + 1,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    (1 << 61) + 1,
    (1 << 62) + 1682,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX,
];

/// Applies 1 to 8 random mutations to `data`, splicing from `other` sometimes; the
/// result is at most `max_len` bytes.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], max_len: usize) {
    for _ in 0..1 + rng.below(8) {
        mutate_once(rng, data, other);
    }
    data.truncate(max_len);
}

fn mutate_once(rng: &mut Rng, d: &mut Vec<u8>, other: &[u8]) {
    let len = d.len();
    match rng.below(10) {
        0 if len > 0 => {
            let i = rng.below(len);
            d[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            d[i] = rng.next_u64() as u8;
        }
        2 if len > 0 => {
            // An interesting integer, little-endian, 1/2/4/8 bytes wide.
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let w = [1, 2, 4, 8][rng.below(4)].min(len);
            let i = rng.below(len - w + 1);
            d[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
        }
        3 => {
            let i = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            d.splice(i..i, bytes);
        }
        4 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(64));
            d.drain(i..i + n);
        }
        5 if len > 0 => {
            // Duplicate a range (repeats JSON array elements, tensor entries...).
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(256));
            let copy = d[i..i + n].to_vec();
            let at = rng.below(len + 1);
            d.splice(at..at, copy);
        }
        6 if !other.is_empty() && len > 0 => {
            let i = rng.below(len);
            let j = rng.below(other.len());
            let n = 1 + rng.below((other.len() - j).min(512));
            let end = (i + n).min(len);
            d.splice(i..end, other[j..j + n].iter().copied());
        }
        7 if len > 0 => {
            d.truncate(rng.below(len));
        }
        _ => number(rng, d),
    }
}

/// Replaces one run of ASCII digits with an interesting value (or a neighbour of the
/// old one, or a negative or fractional number).
fn number(rng: &mut Rng, d: &mut Vec<u8>) {
    let starts: Vec<usize> = (0..d.len())
        .filter(|&i| d[i].is_ascii_digit() && (i == 0 || !d[i - 1].is_ascii_digit()))
        .collect();
    if starts.is_empty() {
        return;
    }
    let s = starts[rng.below(starts.len())];
    let e = (s..d.len())
        .find(|&i| !d[i].is_ascii_digit())
        .unwrap_or(d.len());
    let old: u64 = std::str::from_utf8(&d[s..e])
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let new = match rng.below(6) {
        0 => old.wrapping_add(1).to_string(),
        1 => old.wrapping_sub(1).to_string(),
        2 => format!("-{old}"),
        3 => format!("{old}.5"),
        4 => "1e400".to_string(),
        _ => INTERESTING[rng.below(INTERESTING.len())].to_string(),
    };
    d.splice(s..e, new.into_bytes());
}

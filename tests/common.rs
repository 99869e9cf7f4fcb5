//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

pub const FIXTURES: &[&str] = &[
    "dense_l3",
    "moe_dec_l2",
    "moe_enc_dec_l4",
    "pointwise_top1",
    "heads_odd",
];

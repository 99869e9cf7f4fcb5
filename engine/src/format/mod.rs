//! The OneRec model file: one self-contained, memory-mappable file holding the config,
//! the catalog and every weight in its stored type (docs/FORMAT.md is the reference).
//!
//! ```text
//! [0, 64)        preamble: magic, version, header length, data offset/length, header CRC
//! [64, ..)       JSON header: config, tensor table (name, dtype, shape, offset, bytes, crc32)
//! [data_offset]  tensors, each at a multiple of ALIGN, zero padding between
//! ```

pub mod quant;
mod reader;
mod writer;

pub use reader::{from_blob, open, sniff};
pub use writer::{FileWriter, TensorSpec, WriteError};

use crate::config::Config;
use serde::{Deserialize, Serialize};

/// First 8 bytes of every model file.
pub const MAGIC: [u8; 8] = *b"ONERECMF";
/// The format version this engine writes and reads.
pub const VERSION: u32 = 1;
/// Every tensor starts at a multiple of this (file offset): enough for any SIMD load and
/// for WebGPU's `minStorageBufferOffsetAlignment` / CUDA's allocation granularity.
pub const ALIGN: usize = 256;
/// Bytes of the fixed preamble before the JSON header.
pub const PREAMBLE: usize = 64;
/// Bytes of the preamble covered by the header CRC (everything before the CRC itself).
const PREAMBLE_CRC_SPAN: usize = 32;
/// The reserved bytes of the preamble, after the header CRC; zero in version 1.
const PREAMBLE_RESERVED: std::ops::Range<usize> = 36..PREAMBLE;

/// The JSON header.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub config: Config,
    pub alignment: usize,
    pub tensors: Vec<HeaderTensor>,
    /// Free-form provenance (producer, source checkpoint, quantisation choices).
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderTensor {
    pub name: String,
    /// `f32`, `f16`, `bf16`, `i32`, `i64`, `q8_0` or `q4_0`.
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Byte offset from the start of the data section.
    pub offset: usize,
    pub bytes: usize,
    /// CRC-32 (IEEE) of the tensor's bytes, 8 lowercase hex digits.
    pub crc32: String,
}

/// Fixed-width hex so the header's length does not depend on the checksum values (the
/// writer lays the file out before it knows them).
pub(crate) fn crc_hex(crc: u32) -> String {
    format!("{crc:08x}")
}

/// Exactly 8 lowercase hex digits, as written by `crc_hex` (`from_str_radix` alone would
/// also take uppercase digits and a leading `+`).
pub(crate) fn parse_crc_hex(s: &str) -> Option<u32> {
    let strict = s.len() == 8 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    strict.then(|| u32::from_str_radix(s, 16).ok()).flatten()
}

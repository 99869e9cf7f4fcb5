//! Reading a model file: map it, check the preamble and header, build the tensor table.
//! Tensor checksums are only compared by `ModelFile::verify` (reading every byte at
//! load would page in the whole file, which a memory-mapped engine avoids).

use super::{
    parse_crc_hex, Header, ALIGN, MAGIC, PREAMBLE, PREAMBLE_CRC_SPAN, PREAMBLE_RESERVED, VERSION,
};
use crate::error::{Error, Result};
use crate::model_file::{Integrity, ModelFile, TensorEntry};
use crate::tensor::{Blob, DType};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Whether the file at `path` starts with the model-file magic.
pub fn sniff(path: &Path) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 8];
    crate::fsutil::open_regular(path).is_ok_and(|mut f| f.read_exact(&mut buf).is_ok())
        && buf == MAGIC
}

/// Maps and opens a model file.
pub fn open(path: &Path) -> Result<ModelFile> {
    let file = crate::fsutil::open_regular(path)?;
    // SAFETY: the map is read-only; a file changed underneath a running engine is outside
    // what any mmap-based loader can defend against (`verify` detects it after the fact).
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    from_blob(Arc::new(Blob::Mapped(mmap)), path)
}

/// Opens a model file held in memory (embedded in the program, or read by the caller).
/// `source` names it in messages.
pub fn from_blob(blob: Arc<Blob>, source: &Path) -> Result<ModelFile> {
    let bad = |msg: String| Error::Checkpoint {
        path: source.to_path_buf(),
        msg,
    };
    let (names, tensors, integrity, config) = parse(blob.bytes()).map_err(bad)?;
    let mut file =
        ModelFile::from_parts(config, blob, names, tensors, source.display().to_string())?;
    file.set_integrity(integrity);
    Ok(file)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(std::array::from_fn(|i| b[at + i]))
}

type Parsed = (
    Vec<String>,
    HashMap<String, TensorEntry>,
    Integrity,
    crate::config::Config,
);

fn parse(b: &[u8]) -> std::result::Result<Parsed, String> {
    if b.len() < PREAMBLE {
        if b.len() >= 8 && b[..8] != MAGIC {
            return Err(bad_magic(b));
        }
        return Err(format!(
            "truncated: {} bytes, less than the {PREAMBLE}-byte preamble",
            b.len()
        ));
    }
    if b[..8] != MAGIC {
        return Err(bad_magic(b));
    }
    let version = u32_at(b, 8);
    if version != VERSION {
        return Err(format!(
            "format version {version} is not supported (this engine reads version {VERSION})"
        ));
    }
    // A version-1 writer leaves them zero; anything else was written by something this
    // reader does not understand (or is corruption the CRC does not cover).
    if b[PREAMBLE_RESERVED].iter().any(|&x| x != 0) {
        return Err(format!(
            "corrupted preamble: reserved bytes {}..{} are not zero",
            PREAMBLE_RESERVED.start, PREAMBLE_RESERVED.end
        ));
    }
    let header_len = u32_at(b, 12) as usize;
    let data_offset = u64_at(b, 16);
    let data_len = u64_at(b, 24);
    let want_len = data_offset
        .checked_add(data_len)
        .filter(|&n| n <= usize::MAX as u64);
    if want_len != Some(b.len() as u64) {
        let want = want_len
            .map(|n| n.to_string())
            .unwrap_or_else(|| "an impossible number of".into());
        let what = if want_len.is_some_and(|n| n > b.len() as u64) {
            "truncated"
        } else {
            "corrupted"
        };
        return Err(format!(
            "{what}: the preamble promises {want} bytes, the file has {}",
            b.len()
        ));
    }
    let data_offset = data_offset as usize;
    let data_len = data_len as usize;
    if !data_offset.is_multiple_of(ALIGN) || PREAMBLE.saturating_add(header_len) > data_offset {
        return Err(format!(
            "corrupted preamble: header of {header_len} bytes, data at {data_offset}"
        ));
    }
    let json = &b[PREAMBLE..PREAMBLE + header_len];
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..PREAMBLE_CRC_SPAN]);
    h.update(json);
    let (got, want) = (h.finalize(), u32_at(b, 32));
    if got != want {
        return Err(format!("header checksum mismatch (recorded {want:08x}, computed {got:08x}): the file is corrupted"));
    }
    let header: Header =
        serde_json::from_slice(json).map_err(|e| format!("invalid header: {e}"))?;
    header.config.validate().map_err(|e| e.to_string())?;
    if header.alignment != ALIGN {
        return Err(format!(
            "tensor alignment {} is not supported (expected {ALIGN})",
            header.alignment
        ));
    }
    let mut names = Vec::with_capacity(header.tensors.len());
    let mut tensors = HashMap::with_capacity(header.tensors.len());
    let mut crc32 = HashMap::with_capacity(header.tensors.len());
    let mut ranges = Vec::with_capacity(header.tensors.len());
    for t in &header.tensors {
        let err = |msg: String| format!("tensor `{}`: {msg}", t.name);
        let dtype = DType::from_name(&t.dtype)
            .ok_or_else(|| err(format!("unsupported dtype `{}`", t.dtype)))?;
        let crc = parse_crc_hex(&t.crc32)
            .ok_or_else(|| err(format!("crc32 `{}` is not 8 lowercase hex digits", t.crc32)))?;
        if t.offset % ALIGN != 0 {
            return Err(err(format!(
                "offset {} is not a multiple of {ALIGN}",
                t.offset
            )));
        }
        let end = t.offset.checked_add(t.bytes).filter(|&e| e <= data_len);
        let Some(end) = end else {
            return Err(err(format!(
                "bytes {}..+{} lie outside the {data_len}-byte data section",
                t.offset, t.bytes
            )));
        };
        if dtype.tensor_bytes(&t.shape) != Some(t.bytes) {
            return Err(err(format!(
                "{} bytes cannot hold {dtype} {:?}",
                t.bytes, t.shape
            )));
        }
        let entry = TensorEntry {
            dtype,
            shape: t.shape.clone(),
            start: data_offset + t.offset,
            end: data_offset + end,
        };
        if tensors.insert(t.name.clone(), entry).is_some() {
            return Err(err("appears twice in the header".into()));
        }
        crc32.insert(t.name.clone(), crc);
        names.push(t.name.clone());
        ranges.push((t.offset, end, &t.name));
    }
    ranges.sort_unstable();
    if let Some(w) = ranges.windows(2).find(|w| w[1].0 < w[0].1) {
        return Err(format!("tensors `{}` and `{}` overlap", w[0].2, w[1].2));
    }
    let integrity = Integrity {
        version,
        crc32,
        metadata: header.metadata,
    };
    Ok((names, tensors, integrity, header.config))
}

fn bad_magic(b: &[u8]) -> String {
    // A safetensors file starts with its little-endian header length, then `{`.
    let hint = if b.len() > 8 && b[8] == b'{' {
        " (this looks like a safetensors file: pass its checkpoint directory instead)"
    } else {
        ""
    };
    format!(
        "not a OneRec model file: wrong magic {:?}, expected {:?}{hint}",
        String::from_utf8_lossy(&b[..8.min(b.len())]),
        String::from_utf8_lossy(&MAGIC)
    )
}

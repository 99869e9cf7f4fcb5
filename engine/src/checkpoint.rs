//! Reading a checkpoint directory: `config.json` + `model.safetensors`, memory-mapped.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model_file::{ModelFile, TensorEntry};
use crate::tensor::{Blob, DType};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub fn open_dir(dir: &Path) -> Result<ModelFile> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::Io {
        path: cfg_path.clone(),
        source: e,
    })?;
    let config = Config::from_json(&text)?;
    let st_path = dir.join("model.safetensors");
    let file = std::fs::File::open(&st_path).map_err(|e| Error::Io {
        path: st_path.clone(),
        source: e,
    })?;
    // SAFETY: the map is read-only; a file changed underneath a running engine is outside
    // what any mmap-based loader can defend against.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Io {
        path: st_path.clone(),
        source: e,
    })?;
    let blob = Arc::new(Blob::Mapped(mmap));
    let (names, tensors) = parse_safetensors(blob.bytes()).map_err(|msg| Error::Checkpoint {
        path: st_path.clone(),
        msg,
    })?;
    ModelFile::from_parts(config, blob, names, tensors, dir.display().to_string())
}

/// Tensor table of a safetensors buffer, with byte ranges relative to the buffer start.
pub fn parse_safetensors(
    bytes: &[u8],
) -> std::result::Result<(Vec<String>, HashMap<String, TensorEntry>), String> {
    let (header_len, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("not a valid safetensors file: {e}"))?;
    let base = 8 + header_len;
    let names = meta.offset_keys();
    let infos = meta.tensors();
    let mut out = HashMap::with_capacity(names.len());
    for name in &names {
        let info = infos[name];
        let dtype = match info.dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::I32 => DType::I32,
            safetensors::Dtype::I64 => DType::I64,
            other => return Err(format!("tensor `{name}` has unsupported dtype {other:?}")),
        };
        let (s, e) = info.data_offsets;
        out.insert(
            name.clone(),
            TensorEntry {
                dtype,
                shape: info.shape.clone(),
                start: base + s,
                end: base + e,
            },
        );
    }
    Ok((names, out))
}

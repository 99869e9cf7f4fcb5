//! Reading a checkpoint directory: `config.json` + `model.safetensors`, memory-mapped.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::model_file::{ModelFile, TensorEntry};
use crate::tensor::{Blob, DType};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The most bytes a `config.json` may hold: a real one is under 1 KB (its longest
/// fields are the MoE layer lists, bounded by the layer limits).
const CONFIG_CAP: u64 = 1 << 20;

pub fn open_dir(dir: &Path) -> Result<ModelFile> {
    let cfg_path = dir.join("config.json");
    let text = fsutil::read_small_text(&cfg_path, CONFIG_CAP)?;
    let config = Config::from_json(&text)?;
    let st_path = dir.join("model.safetensors");
    let file = fsutil::open_regular(&st_path)?;
    // SAFETY: the map is read-only; a file changed underneath a running engine is outside
    // what any mmap-based loader can defend against.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Io {
        path: st_path.clone(),
        source: e,
    })?;
    from_blob(config, Arc::new(Blob::Mapped(mmap)), &st_path, dir)
}

/// A checkpoint whose `model.safetensors` bytes are in `blob` (`st_path` names them in
/// messages, `source` names the model).
pub(crate) fn from_blob(
    config: Config,
    blob: Arc<Blob>,
    st_path: &Path,
    source: &Path,
) -> Result<ModelFile> {
    let (names, tensors) = parse_safetensors(blob.bytes()).map_err(|msg| Error::Checkpoint {
        path: st_path.to_path_buf(),
        msg,
    })?;
    ModelFile::from_parts(config, blob, names, tensors, source.display().to_string())
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
        let (Some(start), Some(end)) = (base.checked_add(s), base.checked_add(e)) else {
            return Err(format!("tensor `{name}` has impossible offsets {s}..{e}"));
        };
        out.insert(
            name.clone(),
            TensorEntry {
                dtype,
                shape: info.shape.clone(),
                start,
                end,
            },
        );
    }
    Ok((names, out))
}

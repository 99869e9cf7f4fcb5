//! A loaded model: config, catalog and a table of tensors inside one byte blob
//! (a memory-mapped file, or bytes embedded in the program).

use crate::catalog::Catalog;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::schema;
use crate::tensor::{Blob, DType, TensorView};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte range inside the blob.
    pub start: usize,
    pub end: usize,
}

#[derive(Debug)]
pub struct ModelFile {
    pub config: Config,
    pub catalog: Catalog,
    /// Where it came from, for messages.
    pub source: String,
    /// Tensor names in file order.
    pub names: Vec<String>,
    tensors: HashMap<String, TensorEntry>,
    blob: Arc<Blob>,
    /// Set for a OneRec model file: its format version, per-tensor CRC-32 and metadata.
    integrity: Option<Integrity>,
}

/// What a OneRec model file records beyond the tensors, for `verify` and `inspect`.
#[derive(Debug, Clone, Default)]
pub struct Integrity {
    pub version: u32,
    pub crc32: HashMap<String, u32>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// What `ModelFile::verify` checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub tensors: usize,
    pub bytes: usize,
    /// Tensors whose CRC-32 was compared (0 for a checkpoint directory, which has none).
    pub checksummed: usize,
}

impl ModelFile {
    /// Opens a model: a checkpoint directory (`config.json` + `model.safetensors`) or a
    /// OneRec model file (docs/FORMAT.md).
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            crate::checkpoint::open_dir(path)
        } else if path.exists() {
            crate::format::open(path)
        } else {
            Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        }
    }

    /// A checkpoint held in memory: the text of its `config.json` and the bytes of its
    /// `model.safetensors` (what `open` reads from a directory; the fuzz targets use it).
    pub fn from_checkpoint_bytes(config_json: &str, safetensors: Arc<Blob>) -> Result<Self> {
        let config = Config::from_json(config_json)?;
        let here = Path::new("(memory)");
        crate::checkpoint::from_blob(config, safetensors, here, here)
    }

    /// Builds a model from parts; checks every weight against the config's schema and
    /// reads the catalog.
    pub fn from_parts(
        config: Config,
        blob: Arc<Blob>,
        names: Vec<String>,
        tensors: HashMap<String, TensorEntry>,
        source: String,
    ) -> Result<Self> {
        let len = blob.bytes().len();
        for (name, t) in &tensors {
            if t.start > t.end || t.end > len {
                return Err(Error::tensor(
                    name,
                    format!(
                        "byte range {}..{} is outside the file ({len} bytes)",
                        t.start, t.end
                    ),
                ));
            }
            if t.dtype.tensor_bytes(&t.shape) != Some(t.end - t.start) {
                return Err(Error::tensor(
                    name,
                    format!(
                        "shape {:?} of {} does not match its {} bytes",
                        t.shape,
                        t.dtype,
                        t.end - t.start
                    ),
                ));
            }
        }
        let expected = schema::weight_shapes(&config);
        for (name, shape) in &expected {
            let t = tensors
                .get(name)
                .ok_or_else(|| Error::MissingTensor(name.clone()))?;
            if &t.shape != shape {
                return Err(Error::tensor(
                    name,
                    format!("shape {:?}, expected {:?} from config.json", t.shape, shape),
                ));
            }
            if !(t.dtype.is_float() || t.dtype.is_quantized()) {
                return Err(Error::tensor(
                    name,
                    format!("dtype {} is not a weight type", t.dtype),
                ));
            }
        }
        let known: std::collections::HashSet<&str> = expected
            .iter()
            .map(|(n, _)| n.as_str())
            .chain([
                schema::CATALOG_ITEM_IDS,
                schema::CATALOG_SIDS,
                schema::CATALOG_CODEBOOKS,
                schema::CATALOG_EMBEDDINGS,
                schema::CATALOG_REMOVED,
            ])
            .collect();
        if let Some(extra) = names.iter().find(|n| !known.contains(n.as_str())) {
            return Err(Error::tensor(
                extra,
                "not part of MODEL_SPEC v1 for this config",
            ));
        }
        let mut file = ModelFile {
            catalog: Catalog::new(
                vec![1],
                vec![0; config.n_levels],
                config.n_levels,
                config.codebook_size,
            )?,
            config,
            source,
            names,
            tensors,
            blob,
            integrity: None,
        };
        file.catalog = file.read_catalog()?;
        Ok(file)
    }

    fn read_catalog(&self) -> Result<Catalog> {
        let (l, k) = (self.config.n_levels, self.config.codebook_size);
        let ids = self.tensor(schema::CATALOG_ITEM_IDS)?;
        let sids = self.tensor(schema::CATALOG_SIDS)?;
        if ids.dtype != DType::I64 || ids.shape.len() != 1 {
            return Err(Error::tensor(
                ids.name,
                format!("expected I64 [N], got {} {:?}", ids.dtype, ids.shape),
            ));
        }
        if !matches!(sids.dtype, DType::I32 | DType::I64) || sids.shape != [ids.shape[0], l] {
            return Err(Error::tensor(
                sids.name,
                format!(
                    "expected I32 [{}, {l}], got {} {:?}",
                    ids.shape[0], sids.dtype, sids.shape
                ),
            ));
        }
        // Backends index items with u32 and keep u32::MAX as "no item"; no catalog comes
        // near this (Kuaishou's is in the hundreds of millions).
        if ids.shape[0] >= u32::MAX as usize {
            return Err(Error::tensor(
                ids.name,
                format!(
                    "{} items: more than this engine supports ({})",
                    ids.shape[0],
                    u32::MAX - 1
                ),
            ));
        }
        // Item ids are opaque u64 values stored bit-for-bit in an I64 tensor.
        let item_ids = ids.to_i64()?.into_iter().map(|v| v as u64).collect();
        Catalog::new(item_ids, sids.to_i64()?, l, k)
    }

    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let (key, t) = self
            .tensors
            .get_key_value(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))?;
        Ok(TensorView {
            name: key,
            dtype: t.dtype,
            shape: &t.shape,
            bytes: &self.blob.bytes()[t.start..t.end],
            blob: &self.blob,
        })
    }

    pub fn entry(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    pub fn file_bytes(&self) -> usize {
        self.blob.bytes().len()
    }

    /// The whole mapped file (or checkpoint safetensors) as bytes.
    pub fn blob(&self) -> &Arc<Blob> {
        &self.blob
    }

    /// Format version, checksums and metadata of a OneRec model file; `None` for a
    /// checkpoint directory.
    pub fn integrity(&self) -> Option<&Integrity> {
        self.integrity.as_ref()
    }

    pub(crate) fn set_integrity(&mut self, integrity: Integrity) {
        self.integrity = Some(integrity);
    }

    /// Reads every tensor once: compares its CRC-32 with the one recorded in the file
    /// (model files only) and checks that every weight and block scale is finite.
    /// The first problem found is the error, naming the tensor.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for name in &self.names {
            let t = self.tensor(name)?;
            if let Some(want) = self.integrity.as_ref().and_then(|i| i.crc32.get(name)) {
                let got = crc32fast::hash(t.bytes);
                if got != *want {
                    return Err(Error::tensor(name, format!("checksum mismatch: the file records crc32 {want:08x}, its bytes hash to {got:08x} (the file is corrupted)")));
                }
                report.checksummed += 1;
            }
            check_finite(&t)?;
            report.tensors += 1;
            report.bytes += t.bytes.len();
        }
        Ok(report)
    }
}

/// Errors on the first NaN/Inf weight (or quantisation scale) of a tensor.
fn check_finite(t: &TensorView<'_>) -> Result<()> {
    use crate::format::quant;
    let (n, rows, cols) = quant::matrix_split(t.shape);
    if t.dtype.is_quantized() {
        let per = t.bytes.len() / n.max(1);
        for m in 0..n {
            let bytes = &t.bytes[m * per..(m + 1) * per];
            if let Some(i) =
                quant::block_scales(t.dtype, bytes, rows, cols).position(|s| !s.is_finite())
            {
                return Err(Error::tensor(
                    t.name,
                    format!("non-finite block scale (matrix {m}, block {i})"),
                ));
            }
        }
    } else if t.dtype.is_float() {
        const CHUNK: usize = 1 << 16;
        let mut buf = vec![0f32; CHUNK.min(n * rows * cols)];
        let all = n * rows * cols;
        // Decoded as one long row in chunks, so no full f32 copy of a large tensor.
        let width = t.dtype.matrix_bytes(1, 1).unwrap_or(4);
        let mut start = 0;
        while start < all {
            let len = CHUNK.min(all - start);
            let dst = &mut buf[..len];
            quant::decode_range(
                t.dtype,
                &t.bytes[start * width..(start + len) * width],
                1,
                len,
                0,
                dst,
            )
            .map_err(|msg| Error::tensor(t.name, msg))?;
            if let Some(i) = dst.iter().position(|v| !v.is_finite()) {
                return Err(Error::tensor(
                    t.name,
                    format!("non-finite value {} at index {}", dst[i], start + i),
                ));
            }
            start += len;
        }
    }
    Ok(())
}

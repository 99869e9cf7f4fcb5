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
}

impl ModelFile {
    /// Opens a checkpoint directory (`config.json` + `model.safetensors`).
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            crate::checkpoint::open_dir(path)
        } else if path.exists() {
            Err(Error::Checkpoint {
                path: path.to_path_buf(),
                msg: "not a checkpoint directory (expected config.json + model.safetensors)".into(),
            })
        } else {
            Err(Error::Io { path: path.to_path_buf(), source: std::io::Error::from(std::io::ErrorKind::NotFound) })
        }
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
                return Err(Error::tensor(name, format!("byte range {}..{} is outside the file ({len} bytes)", t.start, t.end)));
            }
            let numel = t.shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
            if numel.map(|n| t.dtype.bytes_for(n)) != Some(t.end - t.start) {
                return Err(Error::tensor(name, format!("shape {:?} of {} does not match its {} bytes", t.shape, t.dtype, t.end - t.start)));
            }
        }
        let expected = schema::weight_shapes(&config);
        for (name, shape) in &expected {
            let t = tensors.get(name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
            if &t.shape != shape {
                return Err(Error::tensor(name, format!("shape {:?}, expected {:?} from config.json", t.shape, shape)));
            }
            if !t.dtype.is_float() {
                return Err(Error::tensor(name, format!("dtype {} is not a float type", t.dtype)));
            }
        }
        let known: std::collections::HashSet<&str> = expected
            .iter()
            .map(|(n, _)| n.as_str())
            .chain([schema::CATALOG_ITEM_IDS, schema::CATALOG_SIDS])
            .collect();
        if let Some(extra) = names.iter().find(|n| !known.contains(n.as_str())) {
            return Err(Error::tensor(extra, "not part of MODEL_SPEC v1 for this config"));
        }
        let mut file = ModelFile {
            catalog: Catalog::new(vec![1], vec![0; config.n_levels], config.n_levels, config.codebook_size)?,
            config,
            source,
            names,
            tensors,
            blob,
        };
        file.catalog = file.read_catalog()?;
        Ok(file)
    }

    fn read_catalog(&self) -> Result<Catalog> {
        let (l, k) = (self.config.n_levels, self.config.codebook_size);
        let ids = self.tensor(schema::CATALOG_ITEM_IDS)?;
        let sids = self.tensor(schema::CATALOG_SIDS)?;
        if ids.dtype != DType::I64 || ids.shape.len() != 1 {
            return Err(Error::tensor(ids.name, format!("expected I64 [N], got {} {:?}", ids.dtype, ids.shape)));
        }
        if !matches!(sids.dtype, DType::I32 | DType::I64) || sids.shape != [ids.shape[0], l] {
            return Err(Error::tensor(
                sids.name,
                format!("expected I32 [{}, {l}], got {} {:?}", ids.shape[0], sids.dtype, sids.shape),
            ));
        }
        // Item ids are opaque u64 values stored bit-for-bit in an I64 tensor.
        let item_ids = ids.to_i64()?.into_iter().map(|v| v as u64).collect();
        Catalog::new(item_ids, sids.to_i64()?, l, k)
    }

    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let (key, t) = self.tensors.get_key_value(name).ok_or_else(|| Error::MissingTensor(name.to_string()))?;
        Ok(TensorView { name: key, dtype: t.dtype, shape: &t.shape, bytes: &self.blob.bytes()[t.start..t.end], blob: &self.blob })
    }

    pub fn entry(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    pub fn file_bytes(&self) -> usize {
        self.blob.bytes().len()
    }
}

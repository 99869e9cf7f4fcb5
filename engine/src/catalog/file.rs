//! The catalog file (docs/CATALOG.md): a catalog on its own, versioned and checksummed,
//! and the optional catalog tensors of a model file (codebooks, embeddings, removed
//! flags).

use super::sid_assign::Codebooks;
use super::snapshot::CatalogContents;
use super::Catalog;
use crate::error::{Error, Result};
use crate::model_file::ModelFile;
use crate::schema;
use crate::tensor::DType;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

pub const MAGIC: [u8; 8] = *b"ONERECCT";
pub const VERSION: u32 = 1;
/// magic, version, levels, codebook size, reserved, items, body CRC-32, preamble CRC-32.
pub const PREAMBLE: usize = 40;
/// The preamble's own CRC-32 covers the bytes before it.
const PREAMBLE_CRC_SPAN: usize = 36;

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Catalog(format!("{}: {}", path.display(), msg.into()))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Bytes per item: id (u64), `levels` codes (u32), removed flag (u8).
fn item_bytes(levels: usize) -> Option<usize> {
    levels.checked_mul(4)?.checked_add(9)
}

/// Whether the file at `path` starts with the catalog file's magic.
pub fn sniff(path: &Path) -> bool {
    let mut buf = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_ok()
        && buf == MAGIC
}

/// Encodes a catalog (ids, SIDs, removed flags) as a catalog file's bytes.
pub fn encode(c: &CatalogContents) -> Vec<u8> {
    let cat = &c.catalog;
    let (n, l) = (cat.len(), cat.levels());
    let mut body = Vec::with_capacity(n * item_bytes(l).unwrap_or(0));
    for &id in cat.item_ids() {
        body.extend_from_slice(&id.to_le_bytes());
    }
    for r in 0..n {
        for &code in cat.sid(r) {
            body.extend_from_slice(&code.to_le_bytes());
        }
    }
    body.extend(c.removed_flags().iter().map(|&r| u8::from(r)));
    let mut out = Vec::with_capacity(PREAMBLE + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(l as u32).to_le_bytes());
    out.extend_from_slice(&(cat.codebook_size() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    let pre_crc = crc32fast::hash(&out[..PREAMBLE_CRC_SPAN]);
    out.extend_from_slice(&pre_crc.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a catalog file; `path` names it in errors. Every size is checked against
/// the bytes present before anything is allocated.
pub fn decode(bytes: &[u8], path: &Path) -> Result<(Catalog, Vec<bool>)> {
    if bytes.len() < PREAMBLE || bytes[..8] != MAGIC {
        return Err(bad(
            path,
            "not a OneRec catalog file (no ONERECCT preamble)",
        ));
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err(bad(path, format!("catalog file version {version} is not supported (this engine reads version {VERSION})")));
    }
    if crc32fast::hash(&bytes[..PREAMBLE_CRC_SPAN]) != u32_at(bytes, 36) {
        return Err(bad(
            path,
            "preamble checksum mismatch (the file is corrupted)",
        ));
    }
    let (levels, codes) = (u32_at(bytes, 12) as usize, u32_at(bytes, 16) as usize);
    let n = u64::from_le_bytes(bytes[24..32].try_into().unwrap_or([0; 8]));
    let body = &bytes[PREAMBLE..];
    let want = usize::try_from(n)
        .ok()
        .zip(item_bytes(levels))
        .and_then(|(n, per)| n.checked_mul(per));
    if levels == 0 || want != Some(body.len()) {
        return Err(bad(
            path,
            format!(
                "{n} items of {levels} levels do not fill its {} body bytes",
                body.len()
            ),
        ));
    }
    if crc32fast::hash(body) != u32_at(bytes, 32) {
        return Err(bad(path, "body checksum mismatch (the file is corrupted)"));
    }
    let n = n as usize;
    let (ids, rest) = body.split_at(n * 8);
    let (sids, removed) = rest.split_at(n * levels * 4);
    let ids = ids
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .collect();
    let sids = sids.chunks_exact(4).map(|b| u32_at(b, 0) as i64).collect();
    if let Some(i) = removed.iter().position(|&f| f > 1) {
        return Err(bad(
            path,
            format!(
                "item row {i} has removed flag {}, expected 0 or 1",
                removed[i]
            ),
        ));
    }
    let catalog = Catalog::new(ids, sids, levels, codes).map_err(|e| bad(path, e.to_string()))?;
    Ok((catalog, removed.iter().map(|&f| f == 1).collect()))
}

/// Reads a catalog file.
pub fn read(path: &Path) -> Result<(Catalog, Vec<bool>)> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes, path)
}

/// Writes a catalog file through a temporary file renamed into place.
pub fn write(path: &Path, c: &CatalogContents) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".onerec-catalog-").suffix(".tmp");
    #[cfg(unix)]
    {
        // Read by the serving process, often another user; tempfile's default is 0600.
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(io)?;
    tmp.write_all(&encode(c)).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

fn float_tensor(file: &ModelFile, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
    if file.entry(name).is_none() {
        return Ok(None);
    }
    let t = file.tensor(name)?;
    if !t.dtype.is_float() || t.shape != shape {
        return Err(Error::tensor(
            name,
            format!(
                "expected a float tensor {shape:?}, got {} {:?}",
                t.dtype, t.shape
            ),
        ));
    }
    Ok(Some(crate::tensor::to_f32(name, t.dtype, t.bytes)?))
}

impl ModelFile {
    /// The tokenizer's codebooks (`catalog.codebooks` `[L, K, D]`), if the file has them.
    pub fn codebooks(&self) -> Result<Option<Arc<Codebooks>>> {
        let Some(e) = self.entry(schema::CATALOG_CODEBOOKS) else {
            return Ok(None);
        };
        let (l, k) = (self.config.n_levels, self.config.codebook_size);
        let d = match e.shape[..] {
            [a, b, d] if a == l && b == k && d > 0 => d,
            _ => {
                return Err(Error::tensor(
                    schema::CATALOG_CODEBOOKS,
                    format!("shape {:?}, expected [{l}, {k}, D]", e.shape),
                ))
            }
        };
        let v = float_tensor(self, schema::CATALOG_CODEBOOKS, &[l, k, d])?.unwrap_or_default();
        Codebooks::new(l, k, d, &v)
            .map(|c| Some(Arc::new(c)))
            .map_err(|m| Error::tensor(schema::CATALOG_CODEBOOKS, m))
    }

    /// Every catalog row's embedding (`catalog.embeddings` `[N, D]`), if the file has them.
    pub fn item_embeddings(&self) -> Result<Option<(usize, Vec<f32>)>> {
        let Some(e) = self.entry(schema::CATALOG_EMBEDDINGS) else {
            return Ok(None);
        };
        let n = self.catalog.len();
        let d = match e.shape[..] {
            [a, d] if a == n && d > 0 => d,
            _ => {
                return Err(Error::tensor(
                    schema::CATALOG_EMBEDDINGS,
                    format!("shape {:?}, expected [{n}, D]", e.shape),
                ))
            }
        };
        Ok(float_tensor(self, schema::CATALOG_EMBEDDINGS, &[n, d])?.map(|v| (d, v)))
    }

    /// Removed flags per catalog row (`catalog.removed` `[N]` I32, 0 or 1); all active
    /// when the file has none.
    pub fn removed_flags(&self) -> Result<Vec<bool>> {
        let n = self.catalog.len();
        if self.entry(schema::CATALOG_REMOVED).is_none() {
            return Ok(vec![false; n]);
        }
        let t = self.tensor(schema::CATALOG_REMOVED)?;
        if !matches!(t.dtype, DType::I32 | DType::I64) || t.shape != [n] {
            return Err(Error::tensor(
                schema::CATALOG_REMOVED,
                format!("expected I32 [{n}], got {} {:?}", t.dtype, t.shape),
            ));
        }
        t.to_i64()?
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                0 | 1 => Ok(v == 1),
                _ => Err(Error::tensor(
                    schema::CATALOG_REMOVED,
                    format!("row {i} holds {v}, expected 0 or 1"),
                )),
            })
            .collect()
    }

    /// The catalog this file serves: its items, removed flags and codebooks.
    pub fn catalog_contents(&self) -> Result<CatalogContents> {
        CatalogContents::new(
            self.catalog.clone(),
            self.removed_flags()?,
            self.codebooks()?,
        )
    }
}

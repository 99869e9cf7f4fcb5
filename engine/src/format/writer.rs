//! Writing a model file: streamed tensor by tensor into a temporary file beside the
//! target, renamed into place only once complete, so a failure never leaves a partial
//! file behind (the temporary file is removed when the writer is dropped).

use super::{crc_hex, Header, HeaderTensor, ALIGN, MAGIC, PREAMBLE, PREAMBLE_CRC_SPAN, VERSION};
use crate::config::Config;
use crate::error::Error;
use crate::tensor::DType;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] Error),
}

/// A tensor to be written: its name, stored type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

pub struct FileWriter {
    path: PathBuf,
    out: BufWriter<tempfile::NamedTempFile>,
    header: Header,
    data_offset: usize,
    /// Index of the next tensor to write.
    next: usize,
    /// Bytes written so far into the data section.
    pos: usize,
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FileWriter({}, {} of {} tensors)",
            self.path.display(),
            self.next,
            self.header.tensors.len()
        )
    }
}

fn align(n: usize) -> usize {
    n.next_multiple_of(ALIGN)
}

/// The header (checksums still zero) and where the data section starts.
fn layout(
    config: &Config,
    tensors: &[TensorSpec],
    metadata: serde_json::Map<String, serde_json::Value>,
) -> Result<(Header, usize), WriteError> {
    config.validate()?;
    let mut table: Vec<HeaderTensor> = Vec::with_capacity(tensors.len());
    let mut names = std::collections::HashSet::with_capacity(tensors.len());
    let mut offset = 0usize;
    for t in tensors {
        let bytes = t
            .dtype
            .tensor_bytes(&t.shape)
            .ok_or_else(|| Error::Tensor {
                name: t.name.clone(),
                msg: format!("{} cannot hold shape {:?}", t.dtype, t.shape),
            })?;
        if !names.insert(t.name.as_str()) {
            return Err(Error::Tensor {
                name: t.name.clone(),
                msg: "appears twice".into(),
            }
            .into());
        }
        table.push(HeaderTensor {
            name: t.name.clone(),
            dtype: t.dtype.name().into(),
            shape: t.shape.clone(),
            offset,
            bytes,
            crc32: crc_hex(0),
        });
        offset = align(offset + bytes);
    }
    let header = Header {
        config: config.clone(),
        alignment: ALIGN,
        tensors: table,
        metadata,
    };
    let json_len = serde_json::to_vec(&header)
        .map_err(|e| Error::Config(e.to_string()))?
        .len();
    if json_len > u32::MAX as usize {
        return Err(Error::Config("the header is larger than 4 GiB".into()).into());
    }
    Ok((header, align(PREAMBLE + json_len)))
}

impl FileWriter {
    /// Bytes of the file `create` would write for these tensors.
    pub fn planned_bytes(
        config: &Config,
        tensors: &[TensorSpec],
        metadata: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<usize, WriteError> {
        let (header, data_offset) = layout(config, tensors, metadata.clone())?;
        Ok(data_offset
            + header
                .tensors
                .last()
                .map(|t| t.offset + t.bytes)
                .unwrap_or(0))
    }

    /// The temporary file being written (renamed to the target by `finish`).
    pub fn temp_path(&self) -> &Path {
        self.out.get_ref().path()
    }

    /// Lays the file out (offsets follow from the shapes) and opens a temporary file in
    /// the target's directory. Tensors must then be written in the order given.
    pub fn create(
        path: &Path,
        config: &Config,
        tensors: &[TensorSpec],
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, WriteError> {
        let (header, data_offset) = layout(config, tensors, metadata)?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let io = |source| WriteError::Io {
            path: path.to_path_buf(),
            source,
        };
        if path.is_dir() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "the output path is a directory",
            )));
        }
        let mut builder = tempfile::Builder::new();
        builder.prefix(".onerec-").suffix(".tmp");
        #[cfg(unix)]
        {
            // A model file is read by other users' processes too; tempfile's default is 0600.
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o644));
        }
        let tmp = builder.tempfile_in(&dir).map_err(|e| {
            io(std::io::Error::new(
                e.kind(),
                format!("cannot create a temporary file in {}: {e}", dir.display()),
            ))
        })?;
        let mut out = BufWriter::with_capacity(1 << 20, tmp);
        // The preamble and header are written last, when the checksums are known.
        out.write_all(&vec![0u8; data_offset]).map_err(io)?;
        Ok(FileWriter {
            path: path.to_path_buf(),
            out,
            header,
            data_offset,
            next: 0,
            pos: 0,
        })
    }

    /// The tensor table, in write order.
    pub fn tensors(&self) -> &[HeaderTensor] {
        &self.header.tensors
    }

    /// Bytes the finished file will have.
    pub fn file_bytes(&self) -> usize {
        self.data_offset + self.data_len()
    }

    fn data_len(&self) -> usize {
        self.header
            .tensors
            .last()
            .map(|t| t.offset + t.bytes)
            .unwrap_or(0)
    }

    fn io(&self, source: std::io::Error) -> WriteError {
        WriteError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends the next tensor's bytes (`name` must be the next in the table).
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
        let Some(t) = self.header.tensors.get_mut(self.next) else {
            return Err(Error::Tensor {
                name: name.into(),
                msg: "not in the file's tensor table (or written twice)".into(),
            }
            .into());
        };
        if t.name != name {
            return Err(Error::Tensor {
                name: name.into(),
                msg: format!("written out of order: `{}` comes next", t.name),
            }
            .into());
        }
        if t.bytes != bytes.len() {
            return Err(Error::Tensor {
                name: name.into(),
                msg: format!(
                    "{} bytes given, {} {:?} takes {}",
                    bytes.len(),
                    t.dtype,
                    t.shape,
                    t.bytes
                ),
            }
            .into());
        }
        t.crc32 = crc_hex(crc32fast::hash(bytes));
        let pad = t.offset - self.pos;
        self.pos = t.offset + t.bytes;
        self.next += 1;
        let r = self
            .out
            .write_all(&[0u8; ALIGN][..pad])
            .and_then(|_| self.out.write_all(bytes));
        r.map_err(|e| self.io(e))
    }

    /// Writes the header, flushes to disk and renames the file into place.
    pub fn finish(mut self) -> Result<u64, WriteError> {
        if let Some(t) = self.header.tensors.get(self.next) {
            return Err(Error::Tensor {
                name: t.name.clone(),
                msg: "never written".into(),
            }
            .into());
        }
        let json = serde_json::to_vec(&self.header).map_err(|e| Error::Config(e.to_string()))?;
        if align(PREAMBLE + json.len()) != self.data_offset {
            // Cannot happen: checksums are fixed-width hex.
            return Err(Error::Config("the header changed length while writing".into()).into());
        }
        let mut pre = [0u8; PREAMBLE];
        pre[0..8].copy_from_slice(&MAGIC);
        pre[8..12].copy_from_slice(&VERSION.to_le_bytes());
        pre[12..16].copy_from_slice(&(json.len() as u32).to_le_bytes());
        pre[16..24].copy_from_slice(&(self.data_offset as u64).to_le_bytes());
        pre[24..32].copy_from_slice(&(self.data_len() as u64).to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&pre[..PREAMBLE_CRC_SPAN]);
        h.update(&json);
        pre[32..36].copy_from_slice(&h.finalize().to_le_bytes());

        let total = self.file_bytes();
        self.out.flush().map_err(|e| self.io(e))?;
        let path = self.path.clone();
        let io = |source| WriteError::Io {
            path: path.clone(),
            source,
        };
        let mut tmp = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        let f = tmp.as_file_mut();
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        f.write_all(&pre).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(total as u64)
    }
}

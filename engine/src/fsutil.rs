//! Opening files an engine is given by path: only regular files, and small ones read with
//! a size cap. A FIFO would block the open (or the read) forever, and a device such as
//! `/dev/zero` would be read until memory runs out.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Opens `path` for reading if it is a regular file (symlinks followed); anything else is
/// an error naming the path and what it is, returned without blocking.
pub fn open_regular(path: &Path) -> Result<File> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading blocks until a writer appears; non-blocking, it
        // returns at once and the type check below refuses it. Reads of a regular file
        // ignore the flag.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io)?;
    // The type of what was opened, not of what the path named a moment before.
    let kind = file.metadata().map_err(io)?.file_type();
    if !kind.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", describe(kind)),
        )));
    }
    Ok(file)
}

/// Reads a regular file of at most `cap` bytes; a larger file is an error (checked while
/// reading too, so a file that grows meanwhile cannot exceed the cap).
pub fn read_small_regular(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = open_regular(path)?;
    let too_big = || {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {cap} bytes, the most this file may hold"),
        ))
    };
    let len = file.metadata().map_err(io)?.len();
    if len > cap {
        return Err(too_big());
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(cap + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > cap {
        return Err(too_big());
    }
    Ok(buf)
}

/// [`read_small_regular`] as UTF-8 text.
pub fn read_small_text(path: &Path, cap: u64) -> Result<String> {
    let bytes = read_small_regular(path, cap)?;
    String::from_utf8(bytes).map_err(|_| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

fn describe(kind: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

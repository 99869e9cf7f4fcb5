//! The model built into the `onerec` binary and used when `--model` is not given: OneRec
//! trained on MovieLens-100K by `reference/train/run_all.py`, quantised to q8_0
//! (`models/default/model.onerec`, figures in `reports/movielens.md`). Its item ids are
//! MovieLens item ids. Titles are not shipped (the dataset's licence forbids it): they are
//! read from the dataset where it has been fetched (`python3 reference/train/data.py`).

use onerec_engine::tensor::Blob;
use onerec_engine::ModelFile;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where messages say the model came from.
pub const SOURCE: &str = "<built-in MovieLens-100K model (models/default/model.onerec)>";

/// Tensors in a model file sit at multiples of 256 bytes from its start; aligning the
/// embedded copy the same way lets backends read f32 weights in place.
#[repr(C, align(256))]
struct Aligned<T: ?Sized>(T);

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!("../models/default/model.onerec"));

/// The embedded model file's bytes.
pub fn bytes() -> &'static [u8] {
    &MODEL.0
}

/// Opens the embedded model (no copy: the engine reads the bytes in place).
pub fn open() -> onerec_engine::Result<ModelFile> {
    onerec_engine::format::from_blob(Arc::new(Blob::Static(bytes())), Path::new(SOURCE))
}

/// `$ONEREC_CACHE_DIR/ml-100k`, else `${XDG_CACHE_HOME:-$HOME/.cache}/onerec/ml-100k`: where
/// `reference/train/data.py` puts the dataset.
pub fn dataset_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(root) = env("ONEREC_CACHE_DIR") {
        return Some(root.join("ml-100k"));
    }
    let cache = env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))?;
    Some(cache.join("onerec").join("ml-100k"))
}

/// MovieLens titles ("Title (year)") by item id, from `ml-100k.item` in `dir`; `None` when
/// the file is absent or unreadable (titles are a nicety: ids are printed instead).
pub fn titles_in(dir: &Path) -> Option<HashMap<u64, String>> {
    // A regular file of bounded size only: a FIFO or a device there must not hang or
    // exhaust memory (the real file is about 100 KB).
    let text = onerec_engine::fsutil::read_small_text(&dir.join("ml-100k.item"), 16 << 20).ok()?;
    let mut out = HashMap::new();
    // Tab-separated: item_id, movie_title, release_year, genres; first line is a header.
    for line in text.lines().skip(1) {
        let mut f = line.split('\t');
        let (Some(id), Some(title)) = (f.next(), f.next()) else {
            continue;
        };
        let Ok(id) = id.trim().parse::<u64>() else {
            continue;
        };
        let year = f.next().map(str::trim).filter(|y| !y.is_empty());
        let title = title.trim();
        out.insert(
            id,
            year.map_or_else(|| title.to_string(), |y| format!("{title} ({y})")),
        );
    }
    (!out.is_empty()).then_some(out)
}

/// Titles from the cached dataset, if it has been fetched.
pub fn titles() -> Option<HashMap<u64, String>> {
    titles_in(&dataset_dir()?)
}

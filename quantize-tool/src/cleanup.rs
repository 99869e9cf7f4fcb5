//! Removing the temporary output file when the tool is interrupted (SIGINT, SIGTERM,
//! SIGHUP): the writer's own cleanup runs on drop, which a signal skips.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The temporary file being written, if any.
static TEMP: Mutex<Option<PathBuf>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<PathBuf>> {
    // A panic while holding the lock leaves a valid `Option`: keep using it.
    TEMP.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs the handler: on SIGINT, SIGTERM or SIGHUP it removes the registered file and
/// exits with status 130. Call once, first thing in `main`.
pub fn install() -> Result<(), ctrlc::Error> {
    ctrlc::set_handler(|| {
        let temp = lock();
        if let Some(path) = temp.as_ref() {
            let _ = std::fs::remove_file(path);
        }
        std::process::exit(130);
    })
}

/// Registration of one temporary file; dropping it unregisters the file.
pub struct Registered(());

/// Creates a file with `create` and registers the path `path_of` gives for it, holding
/// the lock throughout, so a signal arriving in between still finds the file.
pub fn create_registered<T, E>(
    create: impl FnOnce() -> Result<T, E>,
    path_of: impl Fn(&T) -> &Path,
) -> Result<(T, Registered), E> {
    let mut temp = lock();
    let made = create()?;
    *temp = Some(path_of(&made).to_path_buf());
    Ok((made, Registered(())))
}

impl Drop for Registered {
    fn drop(&mut self) {
        *lock() = None;
    }
}

//! What flakeforge keeps between requests and across restarts:
//! layer blobs on disk (bounded, LRU), manifests, configs and layer recipes
//! on disk (small, kept), which image names hold each digest (kept), and
//! resolved tags in memory.

pub mod blobs;
pub mod image_names;
pub mod metadata;
pub mod resolutions;
pub mod tags;

pub use blobs::{BlobStore, CacheWriter};
pub use image_names::ImageNames;
pub use metadata::{GcRoot, ImageRecord, MetadataStore};
pub use resolutions::{Resolution, ResolutionStore};
pub use tags::TagCache;

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use crate::digest::Digest;

/// Writes `bytes` to `path` through a temporary file in `tmp_dir` and a
/// rename, so a reader never sees half a file.
pub fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_dir.join(temp_name());
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A record as stored: `sha256:<hex of the JSON>`, a newline, the JSON.
pub fn seal(json: &[u8]) -> Vec<u8> {
    let mut sealed = format!("{}\n", Digest::of(json)).into_bytes();
    sealed.extend_from_slice(json);
    sealed
}

/// The JSON of a sealed record, if it matches its checksum.
pub fn unseal(sealed: &[u8]) -> Option<&[u8]> {
    let newline = sealed.iter().position(|&b| b == b'\n')?;
    let digest: Digest = std::str::from_utf8(&sealed[..newline]).ok()?.parse().ok()?;
    let json = &sealed[newline + 1..];
    (Digest::of(json) == digest).then_some(json)
}

/// What is stored at `path`, if `intact` holds for it. What does not
/// hold (a flipped bit, a file emptied or cut short) is logged and removed,
/// so that it is made again; it is never handed out.
pub fn read_checked(path: &Path, intact: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
        Err(err) => {
            log::warn!("cannot read {} ({err}); it will be made again", path.display());
            return None;
        }
    };
    let mut bytes = Vec::new();
    if let Err(err) = io::Read::read_to_end(&mut file, &mut bytes) {
        log::warn!("cannot read {} ({err}); it will be made again", path.display());
        return None;
    }
    if intact(&bytes) {
        return Some(bytes);
    }
    log::error!("{} ({} bytes) does not match its digest: removed, it will be made again", path.display(), bytes.len());
    remove_if_same(path, &file);
    None
}

/// Removes `path` if it is still the file `opened` (found damaged): a
/// writer may have put a good copy there in the meantime.
pub fn remove_if_same(path: &Path, opened: &fs::File) {
    use std::os::unix::fs::MetadataExt;
    let (Ok(opened), Ok(current)) = (opened.metadata(), fs::symlink_metadata(path)) else { return };
    if (opened.dev(), opened.ino()) == (current.dev(), current.ino()) {
        if let Err(err) = fs::remove_file(path) {
            log::warn!("cannot remove the damaged {}: {err}", path.display());
        }
    }
}

/// Creates `dir` and its parents. On a read-only file system a missing
/// directory is no error: nothing will be written there.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir_all(dir) {
        Err(err) if err.kind() == io::ErrorKind::ReadOnlyFilesystem => Ok(()),
        other => other,
    }
}

/// Whether files can be created in `dir` (false on a read-only file system,
/// even for root).
pub fn is_writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: a NUL-terminated path; access(2) only reads it.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
}

/// Why nothing can be written to the state directory, if that is so:
/// creates it if missing, then a file in it.
pub fn probe_writable(state_dir: &Path) -> io::Result<()> {
    fs::create_dir_all(state_dir)?;
    let probe = state_dir.join(format!(".write-test-{}", temp_name()));
    fs::write(&probe, b"")?;
    fs::remove_file(&probe)
}

/// A name no other thread or process uses at the same time.
pub fn temp_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

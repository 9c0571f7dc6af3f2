//! What flakeforge keeps between requests and across restarts:
//! layer blobs on disk (bounded, LRU), manifests, configs and layer recipes
//! on disk (small, kept), and resolved tags in memory.

pub mod blobs;
pub mod metadata;
pub mod resolutions;
pub mod tags;

pub use blobs::{BlobStore, CacheWriter};
pub use metadata::{GcRoot, ImageRecord, MetadataStore};
pub use resolutions::{Resolution, ResolutionStore};
pub use tags::TagCache;

use std::fs;
use std::io::{self, Write};
use std::path::Path;

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

/// A name no other thread or process uses at the same time.
pub fn temp_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

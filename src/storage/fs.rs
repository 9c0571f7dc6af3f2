//! The default store: a local state directory, laid out as it always was
//! (`blobs/sha256/<hex>`, `manifests/<hex>`, `configs/`, `layers/`,
//! `sources/`, `images/`, `resolutions/`). Objects are written to a
//! temporary file and renamed, so a reader never sees half of one; a
//! blob's version is its file's stamp (device, inode, size, times).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{BlobEntry, BlobHandle, Kind, Storage, StorageError, Stored, Version};
use crate::digest::Digest;

pub struct FsStorage {
    root: PathBuf,
    blob_dir: PathBuf,
    /// Where records are written before their rename.
    tmp_dir: PathBuf,
    /// Where blobs are written before their rename.
    staging: PathBuf,
}

impl FsStorage {
    /// Opens `state_dir`, creating what is missing and dropping leftovers of
    /// writes a crash interrupted.
    pub fn open(state_dir: &Path) -> io::Result<FsStorage> {
        let root = state_dir.to_path_buf();
        // Leases are for replicas sharing a bucket: made only if one is taken.
        for kind in Kind::ALL.into_iter().filter(|&kind| kind != Kind::Leases) {
            create_dir(&root.join(kind.folder()))?;
        }
        let blob_dir = root.join("blobs").join("sha256");
        create_dir(&blob_dir)?;
        let tmp_dir = root.join("tmp").join("metadata");
        let staging = root.join("tmp").join("blobs");
        for dir in [&tmp_dir, &staging, &root.join("tmp").join("resolutions"), &root.join("tmp").join("names")] {
            let _ = fs::remove_dir_all(dir);
        }
        for dir in [&tmp_dir, &staging] {
            create_dir(dir)?;
        }
        Ok(FsStorage { root, blob_dir, tmp_dir, staging })
    }

    fn path(&self, kind: Kind, name: &str) -> PathBuf {
        self.root.join(kind.folder()).join(name)
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir.join(digest.hex())
    }
}

impl Storage for FsStorage {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Option<Stored>, StorageError> {
        let mut file = match File::open(self.path(kind, name)) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let version = stamp(&file.metadata()?);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(Some(Stored { bytes, version }))
    }

    fn put(&self, kind: Kind, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        // 0666 as `File::create` has it: the umask decides.
        Ok(crate::atomic_file::replace(&self.tmp_dir.join(temp_name()), &self.path(kind, name), bytes, 0o666)?)
    }

    /// A complete temporary file, hard-linked into place: the link fails if the name is taken.
    fn create(&self, kind: Kind, name: &str, bytes: &[u8]) -> Result<Option<Version>, StorageError> {
        let tmp = self.tmp_dir.join(temp_name());
        fs::write(&tmp, bytes)?;
        let path = self.path(kind, name);
        create_dir(&self.root.join(kind.folder()))?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(Some(stamp(&fs::symlink_metadata(&path)?))),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    fn remove(&self, kind: Kind, name: &str, version: &Version) -> Result<(), StorageError> {
        remove_if_version(&self.path(kind, name), version)
    }

    fn list(&self, kind: Kind) -> Result<Vec<String>, StorageError> {
        let entries = match fs::read_dir(self.root.join(kind.folder())) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err.into()),
        };
        Ok(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
    }

    fn list_blobs(&self) -> Result<Vec<BlobEntry>, StorageError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.blob_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let meta = entry.metadata()?;
            match name.to_str().and_then(|n| Digest::from_hex(n).ok()) {
                Some(digest) if meta.is_file() => found.push(BlobEntry {
                    digest,
                    size: meta.len(),
                    used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                }),
                _ => log::warn!("ignoring unexpected file in the blob cache: {:?}", name),
            }
        }
        Ok(found)
    }

    fn open_blob(&self, digest: &Digest) -> Result<Option<Box<dyn BlobHandle>>, StorageError> {
        match File::open(self.blob_path(digest)) {
            Ok(file) => {
                let size = file.metadata()?.len();
                Ok(Some(Box::new(FsBlob { file, size })))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    fn put_blob(&self, digest: &Digest, staged: &Path) -> Result<Version, StorageError> {
        let path = self.blob_path(digest);
        fs::rename(staged, &path)?;
        Ok(stamp(&fs::metadata(&path)?))
    }

    fn remove_blob(&self, digest: &Digest, at: Option<&Version>) -> Result<(), StorageError> {
        let path = self.blob_path(digest);
        match at {
            Some(version) => remove_if_version(&path, version),
            None => Ok(fs::remove_file(path)?),
        }
    }

    fn staging_dir(&self) -> &Path {
        &self.staging
    }
}

struct FsBlob {
    file: File,
    size: u64,
}

impl BlobHandle for FsBlob {
    fn size(&self) -> u64 {
        self.size
    }

    fn version(&self) -> io::Result<Version> {
        Ok(stamp(&self.file.metadata()?))
    }

    fn read_range(&self, start: u64, end: u64) -> io::Result<Box<dyn Read + Send + '_>> {
        let mut file = &self.file;
        file.seek(SeekFrom::Start(start))?;
        Ok(Box::new(file.take(end.saturating_sub(start))))
    }

    fn touch(&self) {
        let _ = self.file.set_modified(SystemTime::now());
    }
}

/// What changes when a file is written to or replaced.
fn stamp(meta: &fs::Metadata) -> Version {
    Version(format!(
        "{}:{}:{}:{}.{}:{}.{}",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    ))
}

/// Removes `path` if it is still the file read at `version`.
fn remove_if_version(path: &Path, version: &Version) -> Result<(), StorageError> {
    match fs::symlink_metadata(path) {
        Ok(current) if stamp(&current) == *version => Ok(fs::remove_file(path)?),
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err.into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_stores_only_what_is_absent() {
        let scratch = crate::test_dir::TestDir::new();
        let state = scratch.path().join("state");
        let storage = FsStorage::open(&state).unwrap();
        let first = storage.create(Kind::Leases, "key", b"one").unwrap().expect("created");
        assert!(storage.create(Kind::Leases, "key", b"two").unwrap().is_none());
        assert_eq!(storage.get(Kind::Leases, "key").unwrap().unwrap().bytes, b"one");
        storage.remove(Kind::Leases, "key", &Version("another".into())).unwrap();
        assert!(storage.get(Kind::Leases, "key").unwrap().is_some(), "removed at another version");
        storage.remove(Kind::Leases, "key", &first).unwrap();
        assert!(storage.get(Kind::Leases, "key").unwrap().is_none());
        assert!(storage.create(Kind::Leases, "key", b"three").unwrap().is_some());
        assert_eq!(fs::read_dir(state.join("tmp/metadata")).unwrap().count(), 0, "a temporary file was left");
    }
}

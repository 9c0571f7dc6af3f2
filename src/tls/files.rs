//! Files under `<state>/tls/` and `--tls-cert`/`--tls-key`: written
//! atomically (private keys 0600 from the first byte), PEM read with errors
//! that name the file but never print what is in it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::TlsError;

pub(crate) const PRIVATE: u32 = 0o600;
pub(crate) const PUBLIC: u32 = 0o644;

/// Creates `dir` (0700: it holds private keys) and its parents.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(TlsError::io("create", parent))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => Err(TlsError::io("create", dir)(err)),
        _ => Ok(()),
    }
}

/// Replaces `path` with `contents` so that readers see the old file or the
/// new one, never a part; the temp file has `mode` before anything is written.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let file_name = path.file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    // What a process of the same id left.
    let _ = fs::remove_file(&temp);
    crate::atomic_file::replace(&temp, path, contents, mode).map_err(TlsError::io("write", path))
}

/// The file's contents, or `None` when there is no such file.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, TlsError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(TlsError::io("read", path)(err)),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(TlsError::io("read", path))
}

/// Every certificate in a PEM file, in order.
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let chain =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|err| bad_pem(path, err))?;
    if chain.is_empty() {
        return Err(bad_file(path, "no CERTIFICATE in this PEM file"));
    }
    Ok(chain)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub(crate) fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|err| match err {
        pem::Error::NoItemsFound => {
            bad_file(path, "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY in this PEM file")
        }
        other => bad_pem(path, other),
    })
}

/// A chain and key file pair, checked to belong together.
pub(crate) fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates(cert_path)?;
    let key = read_private_key(key_path)?;
    let mismatch = || TlsError::KeyMismatch { cert: cert_path.to_path_buf(), key: key_path.to_path_buf() };
    CertifiedKey::from_der(chain, key, &super::provider()).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => mismatch(),
        // The error names the kind of key, never its bytes.
        other => bad_file(key_path, &format!("unusable private key: {other}")),
    })
}

pub(crate) fn warn_if_readable_by_others(key_path: &Path) {
    if readable_by_others(key_path) {
        log::warn!("TLS: {} can be read by other users: chmod 600 it", key_path.display());
    }
}

/// Whether a file can be read by its group or by others.
fn readable_by_others(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o077 != 0)
}

fn bad_file(path: &Path, reason: &str) -> TlsError {
    TlsError::BadFile { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Describes a PEM error without quoting the file: a malformed line of a
/// key file would otherwise end up in the log.
fn bad_pem(path: &Path, err: pem::Error) -> TlsError {
    let reason = match err {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a malformed PEM BEGIN line",
        pem::Error::Base64Decode(_) => "invalid base64 in a PEM section",
        pem::Error::NoItemsFound => "nothing usable in this PEM file",
        pem::Error::SectionTooLarge => "a PEM section is too large",
        _ => "not a valid PEM file",
    };
    bad_file(path, reason)
}

/// An exclusive `flock` on `<dir>/.lock`, held until dropped, so that two
/// processes (`serve` and `ca`) never create two different CAs at once.
/// On a read-only file system nothing can be created, so no lock is needed
/// beyond what the existing file offers.
pub(crate) struct DirLock {
    _file: Option<File>,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, TlsError> {
        let path: PathBuf = dir.join(".lock");
        let opened = OpenOptions::new().create(true).truncate(false).write(true).mode(PRIVATE).open(&path);
        let file = match opened {
            Err(err) if err.kind() == io::ErrorKind::ReadOnlyFilesystem => match File::open(&path) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(DirLock { _file: None }),
                Err(err) => return Err(TlsError::io("open", &path)(err)),
            },
            other => other.map_err(TlsError::io("open", &path))?,
        };
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is passed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(DirLock { _file: Some(file) });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(TlsError::io("lock", &path)(err));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[test]
    fn atomic_writes_set_the_mode_and_leave_no_temp_file() {
        let dir = TestDir::new();
        let key = dir.path().join("server.key");
        write_atomically(&key, b"old", PRIVATE).unwrap();
        write_atomically(&key, b"new", PRIVATE).unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"new");
        assert!(!readable_by_others(&key));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(readable_by_others(&key));
    }
}

//! Built-in TLS (rustls, ring), on by default.
//!
//! Two ways to get a certificate:
//! - With no certificate given, a small local certificate authority under
//!   `<state>/tls/` (`authority.rs`) issues the server certificate; clients
//!   trust the CA once (`flakeforge ca` prints it) and keep working when the
//!   server certificate is re-issued.
//! - `--tls-cert`/`--tls-key` files (e.g. from ACME) are served as given and
//!   read again when they change on disk or on SIGHUP (`reload.rs`).
//!
//! [`TlsAcceptor::wrap`] turns an accepted TCP connection into an encrypted
//! [`Transport`](crate::http::Transport) for the HTTP server, on the
//! connection's own thread.

mod acceptor;
mod authority;
mod files;
mod names;
mod reload;
mod stream;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use acceptor::TlsAcceptor;

use authority::LocalCa;
use reload::{CertFilesSource, LocalCaSource, ReloadingResolver};

/// What `flakeforge serve` hands to [`setup`].
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// The state directory; the local CA lives in its `tls/` subdirectory.
    pub state_dir: PathBuf,
    /// The addresses the server listens on; they become names in the
    /// certificate (the host's own addresses for 0.0.0.0 and ::).
    pub listen: Vec<SocketAddr>,
    /// Extra DNS names or IP addresses for the certificate (`--hostname`).
    pub hostnames: Vec<String>,
    /// A certificate chain and key to serve instead of the local CA's.
    pub cert_files: Option<CertFiles>,
    /// Make a new local CA when `ca.crt` is there without its `ca.key`
    /// (`--new-ca`); otherwise that refuses to start.
    pub new_ca: bool,
}

/// `--tls-cert FILE --tls-key FILE`: a PEM chain (server certificate first)
/// and its PEM private key (RSA, ECDSA or Ed25519).
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot {action} {}: {error}", path.display())]
    Io { action: &'static str, path: PathBuf, error: io::Error },
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("the private key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "{} does not belong to {}: move both away to start a new local CA (clients then have to trust the new one)",
        cert.display(),
        key.display()
    )]
    CaMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "{} is there but its key {} is missing: put the key back (clients trust this CA), \
         or start once with --new-ca to make a new CA (clients then have to trust the new one)",
        cert.display(),
        key.display()
    )]
    CaKeyMissing { cert: PathBuf, key: PathBuf },
    #[error("--hostname {0:?} is neither a DNS name nor an IP address")]
    BadHostname(String),
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    /// For `map_err`: an I/O error on `path` while trying to `action` it.
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TlsError {
        let path = path.to_path_buf();
        move |error| TlsError::Io { action, path, error }
    }
}

/// Prepares the certificate (creating or reusing the local CA, or loading
/// `--tls-cert`/`--tls-key`) and logs where it comes from.
pub fn setup(options: &TlsOptions) -> Result<TlsAcceptor, TlsError> {
    let resolver = match &options.cert_files {
        Some(files) => {
            if !options.hostnames.is_empty() {
                log::warn!("TLS: --hostname is ignored with --tls-cert: the names are those of the given certificate");
            }
            let resolver = ReloadingResolver::new(Box::new(CertFilesSource::new(files.clone())))?;
            log::info!(
                "TLS: serving the certificate in {} (key {}); changed files are read again on the next handshake or on SIGHUP",
                files.cert.display(),
                files.key.display()
            );
            resolver
        }
        None => {
            let names = names::subject_names(&options.listen, &options.hostnames)?;
            let ca = LocalCa::open_or_create(&tls_dir(&options.state_dir), options.new_ca)?;
            log::info!(
                "TLS: local CA {} (SHA-256 {}); `flakeforge ca` prints it for clients to trust",
                ca.cert_path().display(),
                ca.fingerprint()
            );
            ReloadingResolver::new(Box::new(LocalCaSource::new(ca, names)))?
        }
    };
    TlsAcceptor::new(Arc::new(resolver))
}

/// The local CA certificate in PEM, for clients to trust; creates the CA if
/// there is none yet (but never replaces one whose key is lost).
pub fn ca_pem(state_dir: &Path) -> Result<String, TlsError> {
    Ok(LocalCa::open_or_create(&tls_dir(state_dir), false)?.pem().to_string())
}

fn tls_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("tls")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 fingerprint of a DER certificate as `AB:CD:...`, the way
/// browsers and `openssl x509 -fingerprint` show it.
fn fingerprint(der: &[u8]) -> String {
    let hash = crate::digest::Sha256::digest(der);
    hash.iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":")
}

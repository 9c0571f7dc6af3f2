//! Picking up a new certificate without dropping connections.
//!
//! The resolver rustls asks on every handshake checks, at most once a
//! second or right after a SIGHUP, whether its source changed (file stamps
//! for `--tls-cert`/`--tls-key`, the date for the local CA) and loads it
//! again; handshakes in flight keep the certificate they started with. A
//! source that fails to load keeps the previous certificate, with a warning.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::authority::{self, LocalCa};
use super::{files, CertFiles, TlsError};
use crate::metrics;

/// How often a handshake may look at the source for a change.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where the served certificate comes from.
pub(crate) trait CertificateSource: Send + Sync {
    /// Something that differs whenever the certificate may need loading again.
    fn stamp(&self) -> Vec<i64>;
    fn load(&self) -> Result<CertifiedKey, TlsError>;
}

pub(crate) struct ReloadingResolver {
    source: Box<dyn CertificateSource>,
    state: Mutex<ResolverState>,
}

struct ResolverState {
    current: Arc<CertifiedKey>,
    /// The stamp of the last load attempt, failed or not, so a bad file is
    /// reported once, not on every check.
    stamp: Vec<i64>,
    checked: Instant,
    hangups: u64,
}

impl ReloadingResolver {
    /// Loads the source once; its error here stops the start.
    pub(crate) fn new(source: Box<dyn CertificateSource>) -> Result<ReloadingResolver, TlsError> {
        install_hangup_handler();
        let hangups = HANGUPS.load(Ordering::Relaxed);
        let stamp = source.stamp();
        let current = Arc::new(source.load()?);
        publish_expiry(&current);
        let state = ResolverState { current, stamp, checked: Instant::now(), hangups };
        Ok(ReloadingResolver { source, state: Mutex::new(state) })
    }

    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let hangups = HANGUPS.load(Ordering::Relaxed);
        let hangup = hangups != state.hangups;
        if hangup || state.checked.elapsed() >= CHECK_INTERVAL {
            state.checked = Instant::now();
            state.hangups = hangups;
            // Stamp first: a change during the load is seen by the next check.
            let stamp = self.source.stamp();
            if hangup || stamp != state.stamp {
                state.stamp = stamp;
                match self.source.load() {
                    Ok(certified) => {
                        log::info!("TLS: certificate loaded again; new handshakes use it");
                        publish_expiry(&certified);
                        state.current = Arc::new(certified);
                    }
                    Err(err) => log::warn!("TLS: keeping the current certificate: {err}"),
                }
            }
        }
        Arc::clone(&state.current)
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReloadingResolver")
    }
}

/// Shows when the served certificate expires in the metrics.
fn publish_expiry(certified: &CertifiedKey) {
    match certified.cert.first().map(|der| not_after(der)) {
        Some(Ok(expiry)) => drop(metrics::global().tls.certificate_expiry.set(expiry)),
        Some(Err(err)) => log::warn!("TLS: cannot read the certificate's expiry for the metrics: {err}"),
        None => {}
    }
}

/// The end of a certificate's validity, in seconds since the Unix epoch.
fn not_after(der: &[u8]) -> Result<i64, x509_cert::der::Error> {
    use x509_cert::der::Decode;
    let certificate = x509_cert::Certificate::from_der(der)?;
    let not_after = certificate.tbs_certificate().validity().not_after.to_unix_duration();
    Ok(i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX))
}

/// SIGHUPs received so far; each resolver compares it with the count it saw.
static HANGUPS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_hangup(_signal: libc::c_int) {
    // Only an atomic add: anything more is not async-signal-safe.
    HANGUPS.fetch_add(1, Ordering::Relaxed);
}

/// Makes SIGHUP mean "look at the certificate again" instead of ending the
/// process. SA_RESTART spares most blocking calls an EINTR; socket reads
/// with a timeout still get one, which the TLS stream retries.
fn install_hangup_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler only touches an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = count_hangup as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGHUP, &action, std::ptr::null_mut()) != 0 {
                log::warn!("TLS: cannot handle SIGHUP: {}", std::io::Error::last_os_error());
            }
        }
    });
}

/// `--tls-cert`/`--tls-key`, read again when either file changes.
pub(crate) struct CertFilesSource(CertFiles);

impl CertFilesSource {
    pub(crate) fn new(files: CertFiles) -> CertFilesSource {
        CertFilesSource(files)
    }
}

impl CertificateSource for CertFilesSource {
    fn stamp(&self) -> Vec<i64> {
        [files::file_stamp(&self.0.cert), files::file_stamp(&self.0.key)].concat()
    }

    fn load(&self) -> Result<CertifiedKey, TlsError> {
        let certified = files::load_certified_key(&self.0.cert, &self.0.key)?;
        files::warn_if_readable_by_others(&self.0.key);
        Ok(certified)
    }
}

/// The local CA's server certificate, checked once a day so that a server
/// running for a year re-issues it before it expires.
pub(crate) struct LocalCaSource {
    ca: LocalCa,
    names: Vec<String>,
}

impl LocalCaSource {
    pub(crate) fn new(ca: LocalCa, names: Vec<String>) -> LocalCaSource {
        LocalCaSource { ca, names }
    }
}

impl CertificateSource for LocalCaSource {
    fn stamp(&self) -> Vec<i64> {
        vec![authority::today()]
    }

    fn load(&self) -> Result<CertifiedKey, TlsError> {
        self.ca.server_certificate(&self.names)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_certificates_expiry() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(super::not_after(cert.der()).unwrap(), 2_000_000_000);
        assert!(super::not_after(b"not a certificate").is_err());
    }
}

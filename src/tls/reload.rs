//! Picking up a new certificate without dropping connections.
//!
//! The resolver rustls asks on every handshake serves the certificate of a
//! [`Reloading`] source (file stamps for `--tls-cert`/`--tls-key`, the date
//! for the local CA), which is loaded again when it changes or on SIGHUP;
//! handshakes in flight keep the certificate they started with. A source
//! that fails to load keeps the previous certificate, with a warning.

use std::fmt;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::authority::{self, LocalCa};
use super::{files, CertFiles, TlsError};
use crate::metrics;
use crate::reload::{file_stamp, Reloading, Source};

/// Where the served certificate comes from.
pub(crate) type CertificateSource = Box<dyn Source<Value = CertifiedKey, Error = TlsError>>;

pub(crate) struct ReloadingResolver(Reloading<PublishingExpiry>);

impl ReloadingResolver {
    /// Loads the source once; its error here stops the start.
    pub(crate) fn new(source: CertificateSource) -> Result<ReloadingResolver, TlsError> {
        Ok(ReloadingResolver(Reloading::new(PublishingExpiry(source))?))
    }

    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        self.0.current()
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

/// A source whose every certificate loaded shows its expiry in the metrics.
struct PublishingExpiry(CertificateSource);

impl Source for PublishingExpiry {
    type Value = CertifiedKey;
    type Error = TlsError;

    fn what(&self) -> String {
        self.0.what()
    }

    fn stamp(&self) -> Vec<i64> {
        self.0.stamp()
    }

    fn load(&self) -> Result<CertifiedKey, TlsError> {
        let certified = self.0.load()?;
        publish_expiry(&certified);
        Ok(certified)
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

/// `--tls-cert`/`--tls-key`, read again when either file changes.
pub(crate) struct CertFilesSource(CertFiles);

impl CertFilesSource {
    pub(crate) fn new(files: CertFiles) -> CertFilesSource {
        CertFilesSource(files)
    }
}

impl Source for CertFilesSource {
    type Value = CertifiedKey;
    type Error = TlsError;

    fn what(&self) -> String {
        "TLS: the certificate".into()
    }

    fn stamp(&self) -> Vec<i64> {
        [file_stamp(&self.0.cert), file_stamp(&self.0.key)].concat()
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

impl Source for LocalCaSource {
    type Value = CertifiedKey;
    type Error = TlsError;

    fn what(&self) -> String {
        "TLS: the local CA's server certificate".into()
    }

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

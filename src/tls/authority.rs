//! The local certificate authority in `<state>/tls/` and the server
//! certificate it issues.
//!
//! `ca.key` is the CA's identity: its subject name is derived from the key,
//! so the CA can be rebuilt from `ca.key` alone with the same issuer name and
//! key identifier as the stored `ca.crt`, and sign without parsing X.509.
//! `server.crt` is reused while it chains to `ca.crt`, stays valid for 30
//! more days and was issued for exactly the wanted names (`server.names`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use time::OffsetDateTime;

use super::files::{self, DirLock, PRIVATE, PUBLIC};
use super::TlsError;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 60 * 60);
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// A server certificate closer than this to its end is issued anew.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Certificates start this far in the past, for clients whose clock is behind.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

pub(crate) struct LocalCa {
    dir: PathBuf,
    key: KeyPair,
    /// The CA certificate rebuilt from `key`, only as rcgen's issuer.
    issuer: rcgen::Certificate,
    /// `ca.crt` as stored: what clients were told to trust.
    der: CertificateDer<'static>,
    pem: String,
}

impl LocalCa {
    /// Loads the CA in `dir`, creating it when there is none. A `ca.crt`
    /// whose `ca.key` is gone is an error unless `replace_lost_key`: a new
    /// CA breaks every client that trusts the old one, so it is never made
    /// silently (the old certificate is kept as `ca.crt.old`).
    pub(crate) fn open_or_create(dir: &Path, replace_lost_key: bool) -> Result<LocalCa, TlsError> {
        files::create_private_dir(dir)?;
        let _lock = DirLock::acquire(dir)?;
        let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.crt"));
        let key = match files::read_if_exists(&key_path)? {
            Some(pem) => {
                files::warn_if_readable_by_others(&key_path);
                KeyPair::from_pem(&String::from_utf8_lossy(&pem))
                    .map_err(|_| TlsError::BadFile { path: key_path.clone(), reason: "not a usable CA key".into() })?
            }
            None => {
                if cert_path.exists() {
                    if !replace_lost_key {
                        return Err(TlsError::CaKeyMissing { cert: cert_path, key: key_path });
                    }
                    let old = dir.join("ca.crt.old");
                    std::fs::rename(&cert_path, &old).map_err(TlsError::io("move aside", &cert_path))?;
                    log::warn!(
                        "TLS: {} had no key: making a new CA (--new-ca); the old certificate is now {}",
                        cert_path.display(),
                        old.display()
                    );
                }
                let key = KeyPair::generate()?;
                files::write_atomically(&key_path, key.serialize_pem().as_bytes(), PRIVATE)?;
                log::info!("TLS: created a new local CA in {}", dir.display());
                key
            }
        };
        let issuer = ca_params(&key).self_signed(&key)?;
        let pem = match files::read_if_exists(&cert_path)? {
            Some(pem) => String::from_utf8_lossy(&pem).into_owned(),
            None => {
                files::write_atomically(&cert_path, issuer.pem().as_bytes(), PUBLIC)?;
                issuer.pem()
            }
        };
        let der = files::read_certificates(&cert_path)?.swap_remove(0);
        let stored_key = ParsedCertificate::try_from(&der)?.subject_public_key_info();
        if stored_key.as_ref() != key.public_key_der().as_slice() {
            return Err(TlsError::CaMismatch { cert: cert_path, key: key_path });
        }
        Ok(LocalCa { dir: dir.to_path_buf(), key, issuer, der, pem })
    }

    pub(crate) fn pem(&self) -> &str {
        &self.pem
    }

    pub(crate) fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub(crate) fn fingerprint(&self) -> String {
        super::fingerprint(&self.der)
    }

    /// The stored server certificate if it is still good for `names`, else
    /// a new one.
    pub(crate) fn server_certificate(&self, names: &[String]) -> Result<CertifiedKey, TlsError> {
        let _lock = DirLock::acquire(&self.dir)?;
        match self.stored_server_certificate(names) {
            Ok(certified) => {
                log::info!("TLS: reusing the server certificate for {}", names.join(", "));
                Ok(certified)
            }
            Err(why) => {
                log::info!("TLS: issuing a server certificate ({why})");
                self.issue_server_certificate(names, SERVER_VALIDITY)
            }
        }
    }

    /// Why the stored server certificate cannot be reused, if it cannot.
    fn stored_server_certificate(&self, names: &[String]) -> Result<CertifiedKey, String> {
        let stored_names = files::read_if_exists(&self.dir.join("server.names")).map_err(|err| err.to_string())?;
        match stored_names {
            None => return Err("there is none yet".into()),
            Some(text) if String::from_utf8_lossy(&text).lines().ne(names.iter().map(String::as_str)) => {
                return Err("the names changed".into())
            }
            Some(_) => {}
        }
        let certified = files::load_certified_key(&self.dir.join("server.crt"), &self.dir.join("server.key"))
            .map_err(|err| err.to_string())?;
        let renew_at = UnixTime::since_unix_epoch(unix_now() + RENEW_BEFORE);
        self.verify(&certified.cert[0], names, renew_at)
            .map_err(|err| format!("the stored one, checked 30 days ahead: {err}"))?;
        Ok(certified)
    }

    /// Issues, stores and returns a server certificate valid for `validity`.
    fn issue_server_certificate(&self, names: &[String], validity: Duration) -> Result<CertifiedKey, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "flakeforge registry");
        (params.not_before, params.not_after) = validity_window(validity);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let not_after = params.not_after;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        let stored = files::write_atomically(&self.dir.join("server.key"), key.serialize_pem().as_bytes(), PRIVATE)
            .and_then(|()| files::write_atomically(&self.dir.join("server.crt"), cert.pem().as_bytes(), PUBLIC))
            .and_then(|()| {
                files::write_atomically(&self.dir.join("server.names"), (names.join("\n") + "\n").as_bytes(), PUBLIC)
            });
        // Clients check it against the CA, not against the disk: serving it
        // beats not starting (a read-only or full state directory).
        if let Err(err) = stored {
            log::warn!(
                "TLS: the new server certificate is served but not stored ({err}); it is issued again next start"
            );
        }
        log::info!("TLS: server certificate for {}, valid until {}", names.join(", "), not_after.date());
        let private_key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        Ok(CertifiedKey::from_der(vec![cert.der().clone()], private_key, &super::provider())?)
    }

    /// Checks, as a client trusting `ca.crt` would at time `at`, that `cert`
    /// is good for every one of `names`.
    fn verify(&self, cert: &CertificateDer<'_>, names: &[String], at: UnixTime) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone())?;
        let parsed = ParsedCertificate::try_from(cert)?;
        let algorithms = super::provider().signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&parsed, &roots, &[], at, algorithms)?;
        for name in names {
            let name = ServerName::try_from(name.as_str()).map_err(|_| rustls::Error::General(name.clone()))?;
            verify_server_name(&parsed, &name)?;
        }
        Ok(())
    }
}

/// The CA's parameters, all derived from its key: the subject name carries
/// a digest of the public key so two flakeforge CAs never share a name.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    let digest = super::fingerprint(&key.public_key_der()).replace(':', "");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "flakeforge");
    params.distinguished_name.push(DnType::CommonName, format!("flakeforge local CA {}", &digest[..16]));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (params.not_before, params.not_after) = validity_window(CA_VALIDITY);
    params
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn date(since_epoch: Duration) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(since_epoch.as_secs() as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// From a little before now to `validity` from now.
fn validity_window(validity: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = unix_now();
    (date(now.saturating_sub(BACKDATE)), date(now + validity))
}

/// Days since the epoch, for checking the server certificate once a day.
pub(crate) fn today() -> i64 {
    (unix_now().as_secs() / DAY.as_secs()) as i64
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::test_dir::TestDir;

    fn names(extra: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = ["127.0.0.1", "localhost"].iter().chain(extra).map(|s| s.to_string()).collect();
        names.sort();
        names
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Verifies `cert` the way a client that trusts only the stored `ca.crt` would.
    fn verify_with_stored_ca(dir: &Path, cert: &CertificateDer<'_>, name: &str) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(files::read_certificates(&dir.join("ca.crt")).unwrap());
        let parsed = ParsedCertificate::try_from(cert)?;
        let algorithms = crate::tls::provider().signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&parsed, &roots, &[], UnixTime::now(), algorithms)?;
        verify_server_name(&parsed, &ServerName::try_from(name).unwrap())
    }

    #[test]
    fn creates_the_ca_and_a_server_certificate_with_private_keys() {
        let dir = TestDir::new();
        let tls = dir.path().join("tls");
        let ca = LocalCa::open_or_create(&tls, false).unwrap();
        let server = ca.server_certificate(&names(&[])).unwrap();
        for file in ["ca.crt", "ca.key", "server.crt", "server.key", "server.names"] {
            assert!(tls.join(file).is_file(), "{file}");
        }
        assert_eq!(mode(&tls.join("ca.key")), 0o600);
        assert_eq!(mode(&tls.join("server.key")), 0o600);
        assert_eq!(mode(&tls), 0o700);
        assert!(ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(ca.fingerprint().len(), 32 * 3 - 1);
        verify_with_stored_ca(&tls, &server.cert[0], "localhost").unwrap();
        verify_with_stored_ca(&tls, &server.cert[0], "127.0.0.1").unwrap();
        assert!(verify_with_stored_ca(&tls, &server.cert[0], "other.lan").is_err());
    }

    #[test]
    fn reuses_the_ca_and_reissues_the_server_certificate_for_new_names() {
        let dir = TestDir::new();
        let first_ca = LocalCa::open_or_create(dir.path(), false).unwrap();
        let first = first_ca.server_certificate(&names(&[])).unwrap();

        let ca = LocalCa::open_or_create(dir.path(), false).unwrap();
        assert_eq!(ca.fingerprint(), first_ca.fingerprint());
        assert_eq!(ca.server_certificate(&names(&[])).unwrap().cert, first.cert, "reused");

        // Signed by the CA rebuilt from ca.key: must chain to the stored ca.crt.
        let renamed = ca.server_certificate(&names(&["registry.lan"])).unwrap();
        assert_ne!(renamed.cert, first.cert);
        assert_eq!(LocalCa::open_or_create(dir.path(), false).unwrap().fingerprint(), first_ca.fingerprint());
        verify_with_stored_ca(dir.path(), &renamed.cert[0], "registry.lan").unwrap();

        // A name dropped is a change too.
        assert_ne!(ca.server_certificate(&names(&[])).unwrap().cert, renamed.cert);
    }

    #[test]
    fn reissues_a_server_certificate_close_to_expiry() {
        let dir = TestDir::new();
        let ca = LocalCa::open_or_create(dir.path(), false).unwrap();
        let expiring = ca.issue_server_certificate(&names(&[]), 10 * DAY).unwrap();
        verify_with_stored_ca(dir.path(), &expiring.cert[0], "localhost").unwrap();
        let renewed = ca.server_certificate(&names(&[])).unwrap();
        assert_ne!(renewed.cert, expiring.cert);
        assert_eq!(ca.server_certificate(&names(&[])).unwrap().cert, renewed.cert, "a fresh one is kept");
    }

    #[test]
    fn a_lost_ca_certificate_is_rebuilt_from_its_key() {
        let dir = TestDir::new();
        let ca = LocalCa::open_or_create(dir.path(), false).unwrap();
        let server = ca.server_certificate(&names(&[])).unwrap();
        std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
        let rebuilt = LocalCa::open_or_create(dir.path(), false).unwrap();
        verify_with_stored_ca(dir.path(), &server.cert[0], "localhost").unwrap();
        assert_eq!(rebuilt.server_certificate(&names(&[])).unwrap().cert, server.cert, "still chains: reused");
    }

    #[test]
    fn a_lost_ca_key_is_refused_unless_a_new_ca_is_asked_for() {
        let dir = TestDir::new();
        let old = LocalCa::open_or_create(dir.path(), false).unwrap();
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        let err = LocalCa::open_or_create(dir.path(), false).err().expect("refused");
        assert!(matches!(err, TlsError::CaKeyMissing { .. }), "{err}");
        assert!(err.to_string().contains("--new-ca"), "{err}");
        assert!(!dir.path().join("ca.key").exists(), "no key was made");
        assert_eq!(std::fs::read_to_string(dir.path().join("ca.crt")).unwrap(), old.pem(), "ca.crt is untouched");

        let new = LocalCa::open_or_create(dir.path(), true).unwrap();
        assert_ne!(new.fingerprint(), old.fingerprint());
        assert_eq!(std::fs::read_to_string(dir.path().join("ca.crt.old")).unwrap(), old.pem());
        // With its key in place, asking for a new CA changes nothing.
        assert_eq!(LocalCa::open_or_create(dir.path(), true).unwrap().fingerprint(), new.fingerprint());
    }

    #[test]
    fn a_ca_certificate_of_another_key_is_refused() {
        let (dir, other) = (TestDir::new(), TestDir::new());
        LocalCa::open_or_create(dir.path(), false).unwrap();
        LocalCa::open_or_create(other.path(), false).unwrap();
        std::fs::copy(other.path().join("ca.crt"), dir.path().join("ca.crt")).unwrap();
        let err = LocalCa::open_or_create(dir.path(), false).err().expect("a mismatch");
        assert!(matches!(err, TlsError::CaMismatch { .. }), "{err}");
    }
}

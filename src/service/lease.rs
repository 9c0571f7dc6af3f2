//! Building an image once among replicas that share a bucket. Before it
//! builds, a replica creates the lease `leases/<revision key>` (create if
//! absent: `If-None-Match: *` on S3, checked by AWS S3, SeaweedFS and
//! MinIO). A replica that finds the lease held waits for the holder's
//! resolution instead of building; when the holder gives up (the lease is
//! removed with no resolution) it tries to take the lease itself.
//!
//! The guarantee: with a store that checks `If-None-Match`, an image is
//! built once while its holder lives. A lease older than `--build-timeout`
//! plus a minute (by the waiter's own clock, from when it first saw it) is
//! taken to be abandoned (its holder died) and the waiter builds too: then
//! it is built twice, with the same digests (layer generation is
//! deterministic), never disagreeing ones. With a store that ignores the
//! header, every replica builds, as without a lease. With a state
//! directory there is only one process: no lease is taken.

use std::time::{Duration, Instant};

use super::job::Job;
use super::{Service, ServiceError};
use crate::cache::Resolution;
use crate::digest::Digest;
use crate::storage::{Kind, StorageError, Version};

/// How often a waiting replica looks for the holder's resolution.
const POLL: Duration = Duration::from_secs(1);

/// What claiming a build gave.
pub(super) enum Claim {
    /// This replica builds; the lease goes when this is dropped.
    Build(Option<LeaseGuard>),
    /// Another replica built it meanwhile.
    Built(Resolution),
}

/// A held lease, removed when dropped (the build ended, either way).
pub(super) struct LeaseGuard {
    storage: std::sync::Arc<dyn crate::storage::Storage>,
    name: String,
    version: Version,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Err(err) = self.storage.remove(Kind::Leases, &self.name, &self.version) {
            log::warn!("could not remove the build lease {}: {err}", self.name);
        }
    }
}

impl Service {
    /// Claims the build of the image stored under `key`, waiting while
    /// another replica holds it.
    pub(super) fn claim_build(&self, key: &Digest, job: &Job) -> Result<Claim, ServiceError> {
        if !self.storage.is_remote() {
            return Ok(Claim::Build(None));
        }
        let name = key.hex().to_string();
        let holder = format!("{{\"holder\":\"{}\",\"pid\":{}}}", host_name(), std::process::id());
        let patience = self.config.build_timeout + Duration::from_secs(60);
        let mut waiting_since: Option<Instant> = None;
        loop {
            let created = self.storage.create(Kind::Leases, &name, holder.as_bytes()).map_err(store_error)?;
            if let Some(version) = created {
                let guard = LeaseGuard { storage: self.storage.clone(), name, version };
                // It may have been built between the look and the lease.
                return Ok(match self.stored_resolution(key) {
                    Some(resolution) => Claim::Built(resolution),
                    None => Claim::Build(Some(guard)),
                });
            }
            let since = *waiting_since.get_or_insert_with(|| {
                job.note("another replica is building this image; waiting for it");
                log::info!("build lease {name} is held by another replica; waiting for its image");
                Instant::now()
            });
            loop {
                if let Some(resolution) = self.stored_resolution(key) {
                    return Ok(Claim::Built(resolution));
                }
                if since.elapsed() > patience {
                    log::warn!("build lease {name} held for over {patience:?}: building here too");
                    return Ok(Claim::Build(None));
                }
                std::thread::sleep(POLL);
                match self.storage.get(Kind::Leases, &name) {
                    Ok(Some(_)) => continue,
                    // Released with no image: the holder gave up; try to take it.
                    Ok(None) => break,
                    Err(err) => return Err(store_error(err)),
                }
            }
        }
    }

    /// The resolution stored under `key`, if its manifests are all there.
    pub(super) fn stored_resolution(&self, key: &Digest) -> Option<Resolution> {
        self.resolutions.get(key).filter(|r| self.is_complete(r))
    }
}

fn store_error(err: StorageError) -> ServiceError {
    match err {
        StorageError::Unavailable(_) => ServiceError::StoreUnavailable,
        other => ServiceError::internal("taking a build lease", other),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

//! Resolving `name:tag`. A tag stands for a flake revision
//! ([`super::revisions`]); the image of a name at a revision is built once
//! (by a job, [`super::jobs`]) and kept by revision and by tag
//! ([`crate::cache::ResolutionStore`]), so that a restart or another tag at
//! the same revision builds nothing.
//!
//! A request gets, in order: the tag's image if its revision is still the
//! current one; the tag's last image while a job builds the next, unless
//! `--no-stale`; a failure of the last `--negative-ttl`; or the outcome of
//! the tag's job, waited for up to `--answer-within`, after which it gets a
//! retryable answer saying how far the build is, while the job goes on.
//! The systems of a tag build concurrently; several systems make an image
//! index (or Docker manifest list) over those that built.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::job::{Job, Trigger};
use super::jobs::Started;
use super::lease::Claim;
use super::{plan, ResolvedTag, Service, ServiceError};
use crate::cache::{ImageRecord, Resolution};
use crate::digest::Digest;
use crate::image::manifest;
use crate::media_type::ManifestFormat;
use crate::nix::{LockedFlake, Nix};
use crate::reference::{RepoName, Tag};

/// Bump when what an image is made of changes, so that stored resolutions are not reused.
/// 2: manifests carry annotations.
const RESOLUTION_VERSION: u32 = 2;

impl Service {
    /// The manifests for `name:tag` as `client` gets them (see the module's doc).
    pub fn resolve(&self, name: &RepoName, tag: &Tag, client: IpAddr) -> Result<ResolvedTag, ServiceError> {
        self.check_compose(name)?;
        if let Some(current) = self.current(name, tag) {
            if self.is_current(tag, &current) {
                return Ok(ResolvedTag { manifests: current.manifests });
            }
            if self.config.policy.serve_stale {
                // A refresh that failed lately is not tried again before --negative-ttl.
                let _ = self.start_job(name, tag, Trigger::Refresh, None);
                return Ok(ResolvedTag { manifests: current.manifests });
            }
        }
        let job = self.start_job(name, tag, Trigger::Client, Some(client))?;
        job.work.make_urgent(self.nix.scheduler());
        job.wait(self.config.policy.deadline()).unwrap_or_else(|| Err(ServiceError::Building(Box::new(job.status()))))
    }

    /// What `name:tag` is built as, without any Nix work and whatever its
    /// age: the tag's last image, or for a revision tag (40 hex) the image
    /// built at that revision under any tag. `None` when neither is built.
    /// For clients that may pull but not build.
    pub fn built(&self, name: &RepoName, tag: &Tag) -> Option<ResolvedTag> {
        if let Some(current) = self.current(name, tag) {
            return Some(ResolvedTag { manifests: current.manifests });
        }
        let at_revision = tag.is_revision().then(|| self.revision_key(&name.canonical(), tag.as_str()))?;
        let stored = self.resolutions.get(&at_revision).filter(|r| self.is_complete(r))?;
        Some(ResolvedTag { manifests: stored.manifests })
    }

    /// The job for `name:tag`: the running one, or a new one unless the
    /// last failed less than `--negative-ttl` ago (then that failure).
    pub(super) fn start_job(
        &self,
        name: &RepoName,
        tag: &Tag,
        trigger: Trigger,
        client: Option<IpAddr>,
    ) -> Result<Arc<Job>, ServiceError> {
        match self.jobs.start((name.canonical(), tag.to_string()), &self.config.systems, trigger, client) {
            Started::New(job) => Ok(self.spawn_job(job, name, tag)),
            Started::Running(job) => Ok(job),
            Started::Failed(error) => Err(error),
        }
    }

    fn spawn_job(&self, job: Arc<Job>, name: &RepoName, tag: &Tag) -> Arc<Job> {
        let (this, running, name, tag) = (self.this(), job.clone(), name.clone(), tag.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("job {}", job.id))
            .spawn(move || this.jobs.run(&running, || this.run_job(&running, &name, &tag)));
        if let Err(error) = spawned {
            let failed = ServiceError::internal("starting a build thread", error);
            self.jobs.run(&job, || Err(failed));
        }
        job
    }

    /// What `name:tag` is served as now: from memory, else from disk if its manifests are still there.
    pub(super) fn current(&self, name: &RepoName, tag: &Tag) -> Option<Resolution> {
        let canonical = name.canonical();
        if let Some(current) = self.current.get(&canonical, tag.as_str()) {
            return Some(current);
        }
        let stored = self.resolutions.get(&self.tag_key(&canonical, tag)).filter(|r| self.is_complete(r))?;
        // Kept from before the names were recorded, perhaps (an upgrade).
        self.record_names(&canonical, &stored.manifests);
        self.current.insert(&canonical, tag.as_str(), stored.clone(), true);
        Some(stored)
    }

    /// Whether `current` is of the revision `tag` stands for now (a revision tag always is).
    pub(super) fn is_current(&self, tag: &Tag, current: &Resolution) -> bool {
        tag.is_revision()
            || self.revisions.peek(tag).is_some_and(|(locked, fresh)| fresh && locked.revision == current.revision)
    }

    /// Every manifest there, or made again from its image's record.
    pub(super) fn is_complete(&self, resolution: &Resolution) -> bool {
        resolution.manifests.values().all(|digest| self.manifest(digest).is_some())
    }

    /// The job: the tag's revision, then the image at that revision, built unless it was before.
    fn run_job(&self, job: &Job, name: &RepoName, tag: &Tag) -> Result<ResolvedTag, ServiceError> {
        let nix = self.nix.for_work(job.work.clone());
        let locked = self.revisions.get(&nix, tag)?;
        job.set_revision(&locked.revision);
        let canonical = name.canonical();
        let found = self.current(name, tag).filter(|current| current.revision == locked.revision);
        let found = found.or_else(|| self.stored_resolution(&self.revision_key(&canonical, &locked.revision)));
        let resolution = match found {
            Some(resolution) => resolution,
            None if self.storage.is_down() => return Err(ServiceError::StoreUnavailable),
            None => match self.claim_build(&self.revision_key(&canonical, &locked.revision), job)? {
                Claim::Built(resolution) => resolution,
                Claim::Build(_lease) => {
                    job.note(&format!(
                        "building {canonical}:{tag} for {} at revision {}",
                        self.config.systems.join(", "),
                        locked.short_revision()
                    ));
                    let resolved = self.build_tag(name, tag, &locked, &nix)?;
                    let resolution = Resolution { revision: locked.revision.clone(), manifests: resolved.manifests };
                    self.resolutions.put(&self.revision_key(&canonical, &locked.revision), &resolution);
                    resolution
                }
            },
        };
        // The switch: from here on the tag is served as this image, whose
        // digests its name may fetch first.
        self.record_names(&canonical, &resolution.manifests);
        self.resolutions.put(&self.tag_key(&canonical, tag), &resolution);
        self.current.insert(&canonical, tag.as_str(), resolution.clone(), true);
        Ok(ResolvedTag { manifests: resolution.manifests })
    }

    /// Identifies a stored resolution: what it is of, and every setting that changes images.
    fn resolution_key(&self, of: serde_json::Value) -> Digest {
        let mut identity = json!({
            "version": RESOLUTION_VERSION,
            "of": of,
            "flake": self.config.flake,
            "systems": self.config.systems,
            "compression": self.config.compression,
            "max_layers": self.config.max_layers,
            // Switched on, what was built without is planned again and attached.
            "sbom": self.config.attest.sbom,
        });
        // Only when off, so that the keys stored before the setting still hold.
        if !self.config.lookup.legacy_packages {
            identity["legacy_packages"] = json!(false);
        }
        Digest::of(&serde_json::to_vec(&identity).expect("keys serialize"))
    }

    fn tag_key(&self, canonical: &str, tag: &Tag) -> Digest {
        self.resolution_key(json!({ "name": canonical, "tag": tag.as_str() }))
    }

    fn revision_key(&self, canonical: &str, revision: &str) -> Digest {
        self.resolution_key(json!({ "name": canonical, "revision": revision }))
    }

    fn build_tag(
        &self,
        name: &RepoName,
        tag: &Tag,
        locked: &LockedFlake,
        nix: &Nix,
    ) -> Result<ResolvedTag, ServiceError> {
        let systems = &self.config.systems;
        let results: Vec<Result<ImageRecord, ServiceError>> = std::thread::scope(|scope| {
            let builds: Vec<_> =
                systems.iter().map(|system| scope.spawn(|| self.build_image(name, tag, locked, system, nix))).collect();
            builds
                .into_iter()
                .map(|b| b.join().unwrap_or_else(|_| Err(ServiceError::Internal("a build panicked".into()))))
                .collect()
        });
        if let [only] = results.as_slice() {
            return only.clone().map(|record| ResolvedTag { manifests: record.manifests });
        }

        let mut built = Vec::new();
        let mut first_error = None;
        for (system, result) in systems.iter().zip(results) {
            match result {
                Ok(record) => built.push(record),
                // The flake need not offer every package for every system.
                Err(ServiceError::NameUnknown(message)) => {
                    log::debug!("{name}:{tag} is left out for {system}: {message}");
                    first_error.get_or_insert(ServiceError::NameUnknown(message));
                }
                Err(err) => {
                    log::warn!("{name}:{tag} is left out of its index for {system}: {err}");
                    // A real failure says more than another system's missing attribute.
                    if !matches!(first_error, Some(ServiceError::Build { .. } | ServiceError::Internal(_))) {
                        first_error = Some(err);
                    }
                }
            }
        }
        if built.is_empty() {
            return Err(first_error.expect("several systems, none built"));
        }
        // The index says what its images all say.
        let mut annotations = built[0].annotations.clone();
        annotations.retain(|key, value| built.iter().all(|image| image.annotations.get(key) == Some(value)));
        let manifests = [ManifestFormat::Oci, ManifestFormat::Docker]
            .into_iter()
            .map(|format| {
                let entries: Vec<_> = built
                    .iter()
                    .filter_map(|image| Some((image.platform.clone(), self.meta.manifest(&image.manifests[&format])?)))
                    .collect();
                (format, self.meta.put_manifest(&manifest::index_json(format, &entries, &annotations)))
            })
            .collect::<BTreeMap<_, _>>();
        Ok(ResolvedTag { manifests })
    }

    /// Builds and stores the image of `name:tag` for one system.
    fn build_image(
        &self,
        name: &RepoName,
        tag: &Tag,
        locked: &LockedFlake,
        system: &str,
        nix: &Nix,
    ) -> Result<ImageRecord, ServiceError> {
        let started = Instant::now();
        let image = format!("{}:{tag} for {system}", name.canonical());
        let result = plan::plan_image(&self.config, nix, locked, name, tag, system).and_then(|plan| {
            let slot = self.generation.acquire(None).ok_or(ServiceError::TooManyBuilds)?;
            let record = self.assemble(&plan)?;
            drop(slot);
            self.attest(&plan, &record, nix)?;
            Ok(record)
        });
        match &result {
            Ok(record) => log::info!(
                "image {image} ready in {:.1?}: {} layers, {}",
                started.elapsed(),
                record.layers.len(),
                record.manifests[&ManifestFormat::Oci]
            ),
            Err(err) => log::warn!("image {image} failed after {:.1?}: {err}", started.elapsed()),
        }
        result
    }
}

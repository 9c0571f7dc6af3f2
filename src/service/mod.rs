//! The registry's engine: turns an image name and tag into stored manifests
//! (one build job per image however many clients ask, outliving them),
//! serves the last image of a moving tag while its next one builds, builds
//! ahead of pulls (prebuild, watch), attaches what each image is made of
//! (SBOM, provenance), and finds or regenerates blobs.

mod assemble;
pub mod attest;
mod blob;
mod catalog;
mod history;
mod inventory;
pub mod job;
mod jobs;
mod lease;
mod plan;
pub mod prebuild;
mod regenerate;
mod repair;
mod resolve;
mod revisions;
mod slots;

pub use attest::AttestOptions;
pub use blob::BlobSource;
pub use inventory::{AttachedView, CacheView, ImageView, LayerView, PlatformImage, ServedTag};
pub use job::{BuildStatus, Job, JobState, LogChunk, Trigger};
pub use prebuild::PrebuildOptions;

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cache::{BlobStore, ImageNames, MetadataStore, Resolution, ResolutionStore, TagCache, Unwritten};
use crate::config::Config;
use crate::digest::Digest;
use crate::image::InvalidImage;
use crate::media_type::ManifestFormat;
use crate::nix::scheduler::{SchedulerStatus, Work};
use crate::nix::{attr, LockedFlake, Nix, NixError};
use crate::reference::{RepoName, Tag};
use crate::storage::Storage;
use jobs::Jobs;
use prebuild::Watch;
use regenerate::Regenerations;
use revisions::Revisions;
use slots::GenerationSlots;

/// How builds meet clients: `--answer-within`, `--negative-ttl`,
/// `--no-stale`, `--max-compose`.
#[derive(Debug, Clone)]
pub struct BuildPolicy {
    /// How long a request waits for a build (or a regeneration slot) before
    /// it gets a retryable answer; `None` waits for the end.
    pub answer_within: Option<Duration>,
    /// How long a failure (unknown name or ref, failed build) is the answer.
    pub negative_ttl: Duration,
    /// Serve a moving tag's last image while its new revision builds.
    pub serve_stale: bool,
    /// The most packages one name may compose.
    pub max_compose: usize,
}

impl Default for BuildPolicy {
    fn default() -> Self {
        BuildPolicy {
            answer_within: Some(Duration::from_secs(20)),
            negative_ttl: Duration::from_secs(30),
            serve_stale: true,
            max_compose: 8,
        }
    }
}

impl BuildPolicy {
    fn deadline(&self) -> Option<Instant> {
        self.answer_within.map(|within| Instant::now() + within)
    }
}

/// Why a name or tag could not be served. Messages are for clients: no
/// server paths, no builder output.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    NameUnknown(String),
    #[error("{0}")]
    NameInvalid(String),
    #[error("{0}")]
    TagUnknown(String),
    /// `message` is Nix's error line, redacted; `build` the id in `/-/builds`.
    #[error("{message}")]
    Build { message: String, build: Option<String> },
    /// Still building after `--answer-within`.
    #[error("still building")]
    Building(Box<BuildStatus>),
    #[error("too much work is waiting; try again later")]
    TooManyBuilds,
    #[error("too many requests that run Nix from this address; try again in {} s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    /// A layer whose record is known, not in the store, and whose store
    /// paths are not here to make it again.
    #[error("{0}")]
    BlobUnknown(String),
    /// The shared store cannot be reached (or fails): asking again later works.
    #[error("the storage is unavailable; try again later")]
    StoreUnavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    fn internal(what: &str, err: impl std::fmt::Display) -> Self {
        log::error!("{what}: {err}");
        ServiceError::Internal(what.to_string())
    }

    /// Whether asking again soon gets the same answer, so it is remembered
    /// for `--negative-ttl`; waiting in a full queue or over a rate is not.
    pub fn is_lasting(&self) -> bool {
        matches!(
            self,
            ServiceError::NameUnknown(_)
                | ServiceError::NameInvalid(_)
                | ServiceError::TagUnknown(_)
                | ServiceError::Build { .. }
        )
    }
}

impl From<InvalidImage> for ServiceError {
    fn from(err: InvalidImage) -> Self {
        // Clients get no host paths: store paths by their names.
        ServiceError::Build { message: crate::nix::log::redact(&err.0), build: None }
    }
}

impl From<NixError> for ServiceError {
    fn from(err: NixError) -> Self {
        match err {
            NixError::AttrNotFound { name, system } => {
                ServiceError::NameUnknown(format!("the flake has no package {name} for {system}"))
            }
            NixError::NoRefs { .. } => ServiceError::TagUnknown(
                "the served flake is not a git repository, so it has no tags but latest".into(),
            ),
            NixError::Spawn(err) => ServiceError::internal("running nix", err),
            NixError::Output(what) => {
                log::error!("unexpected output from nix: {what}");
                ServiceError::Internal("unexpected output from nix".into())
            }
            NixError::Busy => ServiceError::TooManyBuilds,
            NixError::RateLimited { retry_after } => ServiceError::RateLimited { retry_after },
            ref failed @ (NixError::Failed { .. } | NixError::Timeout { .. }) => {
                ServiceError::Build { message: failed.client_reason(), build: None }
            }
        }
    }
}

/// The manifests a name and tag stand for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTag {
    pub manifests: BTreeMap<ManifestFormat, Digest>,
}

/// Builds and Nix, for `GET /-/builds`.
#[derive(Debug, Clone, Serialize)]
pub struct BuildsStatus {
    /// Running and queued builds first, then finished ones, newest first.
    pub builds: Vec<BuildStatus>,
    pub nix: SchedulerStatus,
}

pub struct Service {
    me: Weak<Service>,
    config: Config,
    /// Where `blobs`, `meta` and `resolutions` keep what they keep (asked only whether it is down).
    storage: Arc<dyn Storage>,
    nix: Nix,
    blobs: BlobStore,
    meta: MetadataStore,
    resolutions: ResolutionStore,
    /// Which image names hold each digest, for access control.
    names: ImageNames,
    /// What each (canonical name, tag) is served as now.
    current: TagCache<Resolution>,
    revisions: Revisions,
    jobs: Jobs,
    generation: GenerationSlots,
    regenerations: Regenerations,
    watch: Watch,
}

/// Tags whose current image is kept in memory (more are read from disk).
const CURRENT_TAGS: usize = 4096;
/// Generations that may wait for a slot, per slot.
const WAITING_PER_SLOT: usize = 16;

impl Service {
    pub fn open(config: Config) -> io::Result<Arc<Service>> {
        std::fs::create_dir_all(&config.state_dir)?;
        let nix = Nix::new(config.nix.clone(), config.build_timeout, &config.scheduler).with_lookup(config.lookup);
        let max_generations = config.scheduler.max_builds;
        let storage = config.storage.open(&config.state_dir).map_err(io::Error::other)?;
        log::info!("storage: {}", storage.describe());
        let blobs = BlobStore::open(storage.clone(), config.cache_size)?;
        // One backlog of records the store did not take, for all three.
        let unwritten = Unwritten::new(storage.clone());
        let meta = MetadataStore::open(storage.clone(), unwritten.clone())?;
        let resolutions = ResolutionStore::open(unwritten.clone());
        let names = ImageNames::open(unwritten);
        Ok(Arc::new_cyclic(|me| Service {
            me: me.clone(),
            storage,
            blobs,
            meta,
            resolutions,
            names,
            current: TagCache::new(CURRENT_TAGS, Duration::MAX),
            revisions: Revisions::new(&config.flake, config.tag_ttl, config.policy.negative_ttl),
            jobs: Jobs::new(config.policy.negative_ttl, &config.state_dir),
            generation: GenerationSlots::new(max_generations, max_generations * WAITING_PER_SLOT),
            regenerations: Regenerations::default(),
            watch: Watch::default(),
            nix,
            config,
        }))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the store could not be reached at its last request.
    pub fn store_is_down(&self) -> bool {
        self.storage.is_down()
    }

    fn this(&self) -> Arc<Service> {
        self.me.upgrade().expect("the service outlives its threads' start")
    }

    /// The image names (canonical) whose images hold `digest`: a manifest,
    /// a config or a layer. Names are recorded when a tag is resolved.
    pub fn image_names(&self, digest: &Digest) -> Vec<String> {
        self.names.names(digest)
    }

    /// Records that the image `canonical` stands for `manifests`: those,
    /// the manifests of an index, their configs and layers, and the
    /// artifacts that refer to them (SBOM, provenance) with their blobs.
    fn record_names(&self, canonical: &str, manifests: &BTreeMap<ManifestFormat, Digest>) {
        let mut digests: Vec<Digest> = Vec::new();
        let mut queue: Vec<Digest> = manifests.values().cloned().collect();
        while let Some(digest) = queue.pop() {
            if digests.contains(&digest) {
                continue;
            }
            if let Some(manifest) = self.meta.manifest(&digest) {
                queue.extend(crate::image::manifest::referenced_digests(&manifest));
                queue.extend(self.referrers(&digest).into_iter().map(|referrer| referrer.digest));
            }
            digests.push(digest);
        }
        self.names.add(canonical, &digests);
    }

    /// Nix running for a client's request: charged to its rate, queued no
    /// longer than `--answer-within`.
    fn client_nix(&self, client: IpAddr) -> Nix {
        self.nix.for_work(Arc::new(Work::for_client(client, self.config.policy.deadline())))
    }

    /// The revision of `latest` to list names and tags from: the last one
    /// found, even when its time is up (then the watch looks again, in the
    /// background), else a new lookup.
    fn latest_revision(&self, nix: &Nix) -> Result<LockedFlake, ServiceError> {
        match self.revisions.peek(&Tag::latest()) {
            Some((locked, fresh)) => {
                if !fresh {
                    self.refresh();
                }
                Ok(locked)
            }
            None => self.revisions.get(nix, &Tag::latest()),
        }
    }

    /// Package names the flake offers for the served systems (lowercase, as image names).
    pub fn catalog(&self, client: IpAddr) -> Result<Vec<String>, ServiceError> {
        self.package_names(&self.client_nix(client))
    }

    fn package_names(&self, nix: &Nix) -> Result<Vec<String>, ServiceError> {
        let locked = self.latest_revision(nix)?;
        let mut names = Vec::new();
        for system in &self.config.systems {
            match catalog::names(nix, &locked, system) {
                Ok(found) => names.extend(found),
                // A full queue or a spent rate is an answer of its own.
                Err(error) => return Err(error.into()),
            }
        }
        names.retain(|n| RepoName::parse(n).is_some());
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The tags of an existing name: `latest` and those served so far.
    /// For `a/b` the attribute `a` is enough (it may be a directory of
    /// images; which images it holds is only known once it is built).
    pub fn tags(&self, name: &RepoName, client: IpAddr) -> Result<Vec<String>, ServiceError> {
        self.check_compose(name)?;
        let nix = self.client_nix(client);
        let locked = self.latest_revision(&nix)?;
        let exists_for = |system: &String| {
            let resolve = |segment: &str| attr::resolve(&nix, &locked, system, segment).map(drop);
            match name.directory_and_image() {
                Some((directory, _)) => resolve(directory),
                None => name.packages().iter().try_for_each(|segment| resolve(segment)),
            }
        };
        let mut outcomes = self.config.systems.iter().map(exists_for);
        let first = outcomes.next().expect("at least one system is served");
        if first.is_err() && !outcomes.any(|o| o.is_ok()) {
            first?;
        }
        let mut tags = self.current.tags_of(&name.canonical());
        tags.push("latest".into());
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// A name composing more than `--max-compose` packages is refused before any work.
    fn check_compose(&self, name: &RepoName) -> Result<(), ServiceError> {
        let count = name.packages().len();
        let max = self.config.policy.max_compose;
        if count > max {
            return Err(ServiceError::NameInvalid(format!(
                "{name} composes {count} packages; at most {max} may be composed in one name"
            )));
        }
        Ok(())
    }

    /// Running, queued and recent builds, and what Nix is doing.
    pub fn builds(&self) -> BuildsStatus {
        BuildsStatus { builds: self.jobs.statuses(), nix: self.nix.scheduler().status() }
    }

    /// A build listed in [`Service::builds`], to read its log.
    pub fn build(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.get(id)
    }

    /// Drops the GC roots of images none of whose layers are cached any more.
    fn after_eviction(&self, evicted: &[Digest]) {
        if evicted.is_empty() {
            return;
        }
        for (_, image) in self.meta.images() {
            let touched = image.layers.iter().any(|d| evicted.contains(d));
            if touched && image.layers.iter().all(|d| !self.blobs.contains(d)) {
                for root in &image.gcroots {
                    // The link is per name and tag: it may serve a newer image by now.
                    let still_ours = std::fs::read_link(&root.link).is_ok_and(|t| t == root.target);
                    if still_ours && std::fs::remove_file(&root.link).is_ok() {
                        log::info!("dropped GC root {} (its image left the cache)", root.link.display());
                    }
                }
            }
        }
    }
}

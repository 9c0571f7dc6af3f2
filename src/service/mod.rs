//! The registry's engine: turns an image name and tag into stored manifests
//! (building once, however many clients ask), and finds or regenerates blobs.

mod assemble;
mod blob;
mod catalog;
pub mod flight;
mod plan;
mod resolve;

pub use blob::BlobSource;

use std::collections::BTreeMap;
use std::io;

use crate::cache::{BlobStore, MetadataStore, TagCache};
use crate::config::Config;
use crate::digest::Digest;
use crate::image::InvalidImage;
use crate::media_type::ManifestFormat;
use crate::nix::{Nix, NixError};
use crate::reference::RepoName;
use flight::{BuildSlots, Flights};

/// Why a name or tag could not be served. Messages are for clients: no server paths.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    NameUnknown(String),
    #[error("{0}")]
    TagUnknown(String),
    #[error("{message}")]
    Build { message: String, log_tail: String },
    #[error("too many builds are waiting; try again later")]
    TooManyBuilds,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    fn internal(what: &str, err: io::Error) -> Self {
        log::error!("{what}: {err}");
        ServiceError::Internal(what.to_string())
    }
}

impl From<InvalidImage> for ServiceError {
    fn from(err: InvalidImage) -> Self {
        ServiceError::Build { message: err.0, log_tail: String::new() }
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
            ref failed @ (NixError::Failed { .. } | NixError::Timeout { .. }) => {
                ServiceError::Build { message: failed.to_string(), log_tail: failed.log_tail().to_string() }
            }
        }
    }
}

/// The manifests a name and tag stand for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTag {
    pub manifests: BTreeMap<ManifestFormat, Digest>,
}

pub struct Service {
    config: Config,
    nix: Nix,
    blobs: BlobStore,
    meta: MetadataStore,
    tags: TagCache<ResolvedTag>,
    flights: Flights<(String, String), Result<ResolvedTag, ServiceError>>,
    slots: BuildSlots,
    catalog: TagCache<Vec<String>>,
}

/// Resolved tags kept in memory.
const TAG_CACHE_ENTRIES: usize = 4096;
/// Builds that may wait for a slot, per slot, before clients get TOOMANYREQUESTS.
const WAITING_BUILDS_PER_SLOT: usize = 16;

impl Service {
    pub fn open(config: Config) -> io::Result<Service> {
        std::fs::create_dir_all(&config.state_dir)?;
        let nix = Nix { program: config.nix.clone(), timeout: config.build_timeout };
        Ok(Service {
            blobs: BlobStore::open(&config.state_dir, config.cache_size)?,
            meta: MetadataStore::open(&config.state_dir)?,
            tags: TagCache::new(TAG_CACHE_ENTRIES, config.tag_ttl),
            flights: Flights::new(),
            slots: BuildSlots::new(config.max_builds, config.max_builds * WAITING_BUILDS_PER_SLOT),
            catalog: TagCache::new(1, config.tag_ttl),
            nix,
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn manifest(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.meta.manifest(digest)
    }

    /// Package names the flake offers for the served systems (lowercase, as
    /// image names), with the images of directories of images as `NAME/IMAGE`.
    pub fn catalog(&self) -> Vec<String> {
        if let Some(names) = self.catalog.get("", "") {
            return names;
        }
        let mut names = Vec::new();
        for system in &self.config.systems {
            names.extend(catalog::names(&self.nix, &self.config.flake, system));
        }
        names.retain(|n| RepoName::parse(n).is_some());
        names.sort();
        names.dedup();
        self.catalog.insert("", "", names.clone(), false);
        names
    }

    /// The tags of an existing name: `latest` and those resolved so far.
    /// For `a/b` the attribute `a` is enough (it may be a directory of
    /// images; which images it holds is only known once it is built).
    pub fn tags(&self, name: &RepoName) -> Result<Vec<String>, ServiceError> {
        let exists_for = |system: &String| {
            let resolve = |segment: &&str| crate::nix::attr::resolve(&self.nix, &self.config.flake, system, segment);
            match name.directory_and_image() {
                Some((directory, _)) => resolve(&directory).map(drop),
                None => name.packages().iter().try_for_each(|segment| resolve(segment).map(drop)),
            }
        };
        let mut outcomes = self.config.systems.iter().map(exists_for);
        let first = outcomes.next().expect("at least one system is served");
        if first.is_err() && !outcomes.any(|o| o.is_ok()) {
            first?;
        }
        let mut tags = self.tags.tags_of(&name.canonical());
        tags.push("latest".into());
        tags.sort();
        tags.dedup();
        Ok(tags)
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

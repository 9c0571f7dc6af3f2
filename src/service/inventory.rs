//! Read-only views of what is served, for the operator's pages (`web/`):
//! the tags known now and the images they stand for, per platform with
//! config and layers, and what the blob cache holds. Nothing here runs Nix
//! or starts a build: it reads what the service and the disk already hold.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Service;
use crate::digest::Digest;
use crate::image::layer::LayerRecord;
use crate::image::origin::TITLE;
use crate::media_type::{ManifestFormat, DOCKER_MANIFEST_LIST, OCI_INDEX};
use crate::reference::{RepoName, Tag};

/// A name and tag the service serves now, and its image.
#[derive(Debug, Clone)]
pub struct ServedTag {
    pub name: RepoName,
    pub tag: Tag,
    pub revision: String,
    /// The OCI manifest or image index.
    pub digest: Digest,
}

/// An image as served: one entry per platform (one alone unless several systems are served).
#[derive(Debug, Clone)]
pub struct ImageView {
    pub served: ServedTag,
    pub platforms: Vec<PlatformImage>,
}

#[derive(Debug, Clone)]
pub struct PlatformImage {
    /// `linux/amd64`, `linux/arm64/v8`.
    pub platform: String,
    pub manifest: Digest,
    /// The config's `config` object (Cmd, Env, …), `null` if the config is not stored.
    pub config: Value,
    pub config_size: u64,
    pub layers: Vec<LayerView>,
    /// The documents attached to the manifest (its SBOM, its provenance), as the referrers API lists them.
    pub attached: Vec<AttachedView>,
}

impl PlatformImage {
    /// Bytes a client downloads for this platform: the config and every layer as served.
    pub fn size(&self) -> u64 {
        self.config_size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

#[derive(Debug, Clone)]
pub struct LayerView {
    pub digest: Digest,
    pub size: u64,
    /// Whether the blob is in the cache now (else it is made again when asked for).
    pub cached: bool,
    /// What the layer is made of, if its record is known: a kind and its store paths or file.
    pub contents: Option<(&'static str, Vec<String>)>,
}

/// A document attached to an image's manifest, and where to fetch it.
#[derive(Debug, Clone)]
pub struct AttachedView {
    pub artifact_type: String,
    /// The artifact's manifest.
    pub manifest: Digest,
    /// The document: the artifact's one layer, a blob.
    pub document: Digest,
    /// The file name the artifact gives it (`sbom.cdx.json`).
    pub file_name: Option<String>,
}

/// The blob cache: how full, and its largest blobs.
#[derive(Debug, Clone)]
pub struct CacheView {
    pub used: u64,
    pub limit: u64,
    pub blobs: usize,
    pub largest: Vec<(Digest, u64, Option<LayerRecord>)>,
}

impl Service {
    /// Every name and tag served since the start, and `latest` of each of
    /// `names` that was built before (read from disk), sorted.
    pub fn served_tags(&self, names: &[String]) -> Vec<ServedTag> {
        let mut found = BTreeMap::new();
        for (name, tag, resolution) in self.current.entries() {
            if let (Some(name), Some(tag)) = (RepoName::parse(&name), Tag::parse(&tag)) {
                found.insert((name, tag), resolution);
            }
        }
        for name in names.iter().filter_map(|name| RepoName::parse(name)) {
            let key = (RepoName::parse(&name.canonical()).unwrap_or(name), Tag::latest());
            if let std::collections::btree_map::Entry::Vacant(entry) = found.entry(key) {
                let (name, tag) = entry.key();
                if let Some(resolution) = self.current(name, tag) {
                    entry.insert(resolution);
                }
            }
        }
        found
            .into_iter()
            .filter_map(|((name, tag), resolution)| {
                let digest = resolution.manifests.get(&ManifestFormat::Oci)?.clone();
                Some(ServedTag { name, tag, revision: resolution.revision, digest })
            })
            .collect()
    }

    /// The image `name:tag` stands for now, if it was built.
    pub fn image_view(&self, name: &RepoName, tag: &Tag) -> Option<ImageView> {
        let resolution = self.current(name, tag)?;
        let digest = resolution.manifests.get(&ManifestFormat::Oci)?.clone();
        let served = ServedTag {
            name: RepoName::parse(&name.canonical()).unwrap_or_else(|| name.clone()),
            tag: tag.clone(),
            revision: resolution.revision,
            digest,
        };
        Some(self.view_of(served))
    }

    /// The image of a served tag, per platform.
    pub fn view_of(&self, served: ServedTag) -> ImageView {
        let document = self.manifest_json(&served.digest);
        let is_index = matches!(document["mediaType"].as_str(), Some(OCI_INDEX | DOCKER_MANIFEST_LIST));
        let platforms = if is_index {
            let entries = document["manifests"].as_array().cloned().unwrap_or_default();
            entries
                .iter()
                .filter_map(|entry| {
                    let digest: Digest = entry["digest"].as_str()?.parse().ok()?;
                    Some(self.platform_image(platform_name(&entry["platform"]), digest))
                })
                .collect()
        } else {
            vec![self.platform_image(None, served.digest.clone())]
        };
        ImageView { served, platforms }
    }

    fn manifest_json(&self, digest: &Digest) -> Value {
        self.meta.manifest(digest).and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or(Value::Null)
    }

    fn platform_image(&self, platform: Option<String>, manifest: Digest) -> PlatformImage {
        let document = self.manifest_json(&manifest);
        let config_blob: Value = document["config"]["digest"]
            .as_str()
            .and_then(|digest| digest.parse().ok())
            .and_then(|digest| self.meta.config(&digest))
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null);
        let layers = document["layers"].as_array().cloned().unwrap_or_default();
        let layers = layers
            .iter()
            .filter_map(|layer| {
                let digest: Digest = layer["digest"].as_str()?.parse().ok()?;
                Some(LayerView {
                    size: layer["size"].as_u64().unwrap_or_default(),
                    cached: self.blobs.contains(&digest),
                    contents: self.meta.layer(&digest).map(|record| record.source.contents()),
                    digest,
                })
            })
            .collect();
        let attached = self
            .referrers(&manifest)
            .into_iter()
            .filter_map(|referrer| {
                let artifact = self.manifest_json(&referrer.digest);
                let document = &artifact["layers"][0];
                Some(AttachedView {
                    document: document["digest"].as_str()?.parse().ok()?,
                    file_name: document["annotations"][TITLE].as_str().map(str::to_string),
                    artifact_type: referrer.artifact_type,
                    manifest: referrer.digest,
                })
            })
            .collect();
        PlatformImage {
            platform: platform.or_else(|| platform_name(&config_blob)).unwrap_or_else(|| "unknown".into()),
            manifest,
            config: config_blob["config"].clone(),
            config_size: document["config"]["size"].as_u64().unwrap_or_default(),
            layers,
            attached,
        }
    }

    /// How full the blob cache is, and its `largest` largest blobs with their records.
    pub fn cache_view(&self, largest: usize) -> CacheView {
        let (blobs, biggest) = self.blobs.largest(largest);
        CacheView {
            used: self.blobs.total_bytes(),
            limit: self.blobs.max_bytes(),
            blobs,
            largest: biggest
                .into_iter()
                .map(|(digest, size)| (digest.clone(), size, self.meta.layer(&digest)))
                .collect(),
        }
    }
}

/// `os/architecture[/variant]` of an OCI platform object (or an image config).
fn platform_name(platform: &Value) -> Option<String> {
    let (os, architecture) = (platform["os"].as_str()?, platform["architecture"].as_str()?);
    Some(match platform["variant"].as_str() {
        Some(variant) => format!("{os}/{architecture}/{variant}"),
        None => format!("{os}/{architecture}"),
    })
}

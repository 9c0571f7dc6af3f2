//! Making lost or damaged metadata again. The cache hands out nothing that
//! fails its check (it removes it and reports it missing); from an image's
//! record this writes back its config, manifests and layer records, the
//! same bytes as before, without Nix. What no record covers is made again
//! by resolving the tag once more, which rebuilds what is missing.

use std::net::IpAddr;

use super::{Service, ServiceError};
use crate::cache::ImageRecord;
use crate::digest::Digest;
use crate::image::layer::LayerRecord;
use crate::image::manifest;
use crate::media_type::ManifestFormat;
use crate::reference::{RepoName, Tag};

impl Service {
    /// The manifest `name:tag` stands for in `format`, and its digest. A
    /// resolution whose manifest is gone for good is dropped and the tag
    /// resolved again, so a lost manifest is never a lasting 404.
    pub fn tag_manifest(
        &self,
        name: &RepoName,
        tag: &Tag,
        format: ManifestFormat,
        client: IpAddr,
    ) -> Result<(Digest, Vec<u8>), ServiceError> {
        for _ in 0..2 {
            let digest = self.resolve(name, tag, client)?.manifests[&format].clone();
            if let Some(manifest) = self.manifest(&digest) {
                return Ok((digest, manifest));
            }
            log::warn!("{name}:{tag}: manifest {digest} is lost; resolving the tag again");
            self.current.forget(&name.canonical(), tag.as_str());
        }
        Err(ServiceError::Internal(format!("the manifest of {name}:{tag} could not be made again")))
    }

    /// A stored manifest, made again from its image's record if it was lost.
    pub fn manifest(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.meta.manifest(digest).or_else(|| {
            self.restore_image_listing(digest, |image| image.manifests.values().any(|d| d == digest))?;
            self.meta.manifest(digest)
        })
    }

    /// A stored config, made again from its image's record if it was lost.
    pub(super) fn config_blob(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.meta.config(digest).or_else(|| {
            self.restore_image_listing(digest, |image| image.config_digest() == *digest)?;
            self.meta.config(digest)
        })
    }

    /// A layer's record, made again from its image's record if it was lost.
    pub(super) fn layer_record(&self, digest: &Digest) -> Option<LayerRecord> {
        self.meta.layer(digest).or_else(|| {
            self.restore_image_listing(digest, |image| image.layers.contains(digest))?;
            self.meta.layer(digest)
        })
    }

    /// Restores the stored image that lists `digest` in the role `listed`
    /// checks; `None` if there is none.
    fn restore_image_listing(&self, digest: &Digest, listed: impl Fn(&ImageRecord) -> bool) -> Option<()> {
        let image = self.meta.image_listing(digest).filter(listed)?;
        self.restore(&image).then_some(())
    }

    /// Writes back whatever of `image` is missing: its config, manifests
    /// and layer records. False if the record does not give back its own
    /// digests (then the image must be built again).
    pub(super) fn restore(&self, image: &ImageRecord) -> bool {
        let config = image.config.as_bytes();
        let layer_digests: Vec<&Digest> = image.layer_records.iter().map(|layer| &layer.digest).collect();
        if layer_digests.iter().copied().ne(&image.layers) {
            log::error!("an image record disagrees with itself on its layers; the image is built again");
            return false;
        }
        for (&format, digest) in &image.manifests {
            if self.meta.manifest(digest).is_some() {
                continue;
            }
            let made = manifest::manifest_json(format, config, &image.layer_records, &image.annotations);
            if Digest::of(&made) != *digest {
                log::error!("manifest {digest} comes out differently from its image record; the image is built again");
                return false;
            }
            self.meta.put_manifest(&made);
            log::info!("manifest {digest} was lost: written again from its image record");
        }
        let config_digest = image.config_digest();
        if self.meta.config(&config_digest).is_none() {
            self.meta.put_config(config);
            log::info!("config {config_digest} was lost: written again from its image record");
        }
        for layer in &image.layer_records {
            if self.meta.layer(&layer.digest).is_none() {
                self.meta.put_layer(&self.source_key(&layer.source), layer);
                log::info!("the record of layer {} was lost: written again from its image record", layer.digest);
            }
        }
        true
    }
}

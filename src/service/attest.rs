//! Every image says what it is made of. Once an image is assembled, its
//! SBOM ([`crate::image::sbom`]) and provenance ([`crate::image::provenance`])
//! are made from what Nix knows of it (the closure with its NAR hashes and
//! references, the derivations' names and versions, the packages' meta) and
//! attached to each of its manifests, the OCI and the Docker form alike, as
//! OCI artifacts ([`crate::image::artifact`]): the referrers API and the
//! referrers tag `sha256-<hex>` list them by the manifest's digest. A
//! multi-system index has none of its own: each platform's manifest has its own.
//!
//! Both documents are functions of the image, so an image attached once is
//! not attached again, and making them again (another state directory)
//! gives the same bytes. `--no-sbom` ([`AttestOptions`]) makes none; what
//! was attached before stays listed, as it still says what those images are.
//! Signatures would be attached here too, as more referrers of the same
//! manifests (a subject takes any number).

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::json;

use super::plan::ImagePlan;
use super::{Service, ServiceError};
use crate::cache::ImageRecord;
use crate::digest::Digest;
use crate::image::artifact::{self, Attachment, Referrer, Subject, EMPTY_CONFIG};
use crate::image::origin::CREATED;
use crate::image::provenance::{self, ProvenanceInput, PREDICATE_TYPE};
use crate::image::sbom::{self, BomInput};
use crate::media_type::{ManifestFormat, CYCLONEDX_JSON, IN_TOTO_JSON};
use crate::nix::{derivation, Nix};

/// What is attached to the images built (`--no-sbom`).
#[derive(Debug, Clone)]
pub struct AttestOptions {
    /// An SBOM and a provenance statement for every image built.
    pub sbom: bool,
}

impl Default for AttestOptions {
    fn default() -> Self {
        AttestOptions { sbom: true }
    }
}

impl Service {
    /// Attaches the SBOM and provenance of the image `plan` was assembled
    /// into (`record`), unless that is off or they are attached already.
    pub(super) fn attest(&self, plan: &ImagePlan, record: &ImageRecord, nix: &Nix) -> Result<(), ServiceError> {
        if !self.config.attest.sbom || record.manifests.values().all(|d| self.meta.referrers(d).is_some()) {
            return Ok(());
        }
        let started = Instant::now();
        let origin =
            plan.origin.as_ref().ok_or_else(|| ServiceError::Internal("an image plan without origin".into()))?;
        let missing = |what: &str| ServiceError::internal("attaching an SBOM", format!("{what} is not stored"));
        let layers = record
            .layers
            .iter()
            .map(|digest| self.meta.layer(digest).ok_or_else(|| missing(&format!("the record of layer {digest}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let oci = &record.manifests[&ManifestFormat::Oci];
        let manifest = self.meta.manifest(oci).ok_or_else(|| missing(&format!("manifest {oci}")))?;
        let config_digest = config_digest_of(&manifest).ok_or_else(|| missing("the manifest's config"))?;

        let closure = nix.closure(&sbom::store_roots(&plan.layers))?;
        let names = nix.package_names(&closure)?;
        let metas = origin
            .packages
            .iter()
            .map(|package| derivation::meta(nix, &origin.locked, &package.attr_path))
            .collect::<Result<Vec<_>, _>>()?;
        let bom = sbom::cyclonedx(&BomInput {
            origin,
            platform: &record.platform,
            config_digest: &config_digest,
            layers: &layers,
            closure: &closure,
            names: &names,
            metas: &metas,
        });
        let manifests: Vec<Digest> = record.manifests.values().cloned().collect();
        let settings = json!({ "compression": self.config.compression, "maxLayers": self.config.max_layers });
        let statement = provenance::statement(&ProvenanceInput { origin, manifests: &manifests, settings });

        let created: BTreeMap<String, String> =
            origin.created().map(|created| (CREATED.to_owned(), created)).into_iter().collect();
        let mut provenance_annotations = created.clone();
        provenance_annotations.insert("in-toto.io/predicate-type".into(), PREDICATE_TYPE.into());
        let attachments = [
            Attachment { media_type: CYCLONEDX_JSON, file_name: "sbom.cdx.json", bytes: bom, annotations: created },
            Attachment {
                media_type: IN_TOTO_JSON,
                file_name: "provenance.intoto.json",
                bytes: statement,
                annotations: provenance_annotations,
            },
        ];
        self.attach(record, &attachments)?;
        log::info!(
            "attached an SBOM ({} store paths) and provenance to {}:{} for {} in {:.1?}",
            closure.len(),
            origin.name,
            origin.locked.short_revision(),
            origin.system,
            started.elapsed()
        );
        Ok(())
    }

    /// Stores `attachments` and an artifact manifest of each for every
    /// manifest of `record`; the list of referrers last, so that whatever
    /// it lists is there.
    fn attach(&self, record: &ImageRecord, attachments: &[Attachment]) -> Result<(), ServiceError> {
        self.meta.put_config(EMPTY_CONFIG);
        for attachment in attachments {
            self.meta.put_config(&attachment.bytes);
        }
        for digest in record.manifests.values() {
            let manifest = self.meta.manifest(digest).ok_or_else(|| {
                ServiceError::internal("attaching an SBOM", format!("manifest {digest} is not stored"))
            })?;
            let subject = Subject::of(&manifest);
            let referrers: Vec<Referrer> = attachments
                .iter()
                .map(|attachment| {
                    let (manifest, referrer) = artifact::artifact_manifest(attachment, &subject);
                    self.meta.put_manifest(&manifest);
                    referrer
                })
                .collect();
            // What the referrers tag stands for, fetchable by its digest too.
            self.meta.put_manifest(&artifact::referrers_index(&referrers));
            self.meta.put_referrers(digest, &referrers);
        }
        Ok(())
    }

    /// The artifacts that refer to the manifest `digest`: none when it is
    /// unknown or has none.
    pub fn referrers(&self, digest: &Digest) -> Vec<Referrer> {
        self.meta.referrers(digest).unwrap_or_default()
    }
}

/// The digest of the config an image manifest names.
fn config_digest_of(manifest: &[u8]) -> Option<Digest> {
    let value: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    value["config"]["digest"].as_str()?.parse().ok()
}

//! OCI artifacts that say something about an image (its SBOM, its
//! provenance): an image manifest of OCI 1.1 with an `artifactType`, the
//! empty config, the document as its one layer, and the image's manifest as
//! its `subject`; the descriptor the referrers API lists it by; and the
//! referrers index itself. A signature would be one more artifact of the
//! same shape (or one whose subject is the SBOM's manifest).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::manifest::media_type_of;
use super::origin::TITLE;
use crate::digest::Digest;
use crate::media_type::{OCI_EMPTY, OCI_INDEX, OCI_MANIFEST};

/// The config blob of an artifact that has none.
pub const EMPTY_CONFIG: &[u8] = b"{}";

/// A document about an image, before it is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Its media type, which is also the artifact's type.
    pub media_type: &'static str,
    /// The file name clients that pull it save it as (`sbom.cdx.json`).
    pub file_name: &'static str,
    pub bytes: Vec<u8>,
    /// The annotations of its manifest (listed by the referrers API too).
    pub annotations: BTreeMap<String, String>,
}

/// The manifest an artifact refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

impl Subject {
    /// The subject descriptor of a stored manifest (of either form).
    pub fn of(manifest: &[u8]) -> Subject {
        Subject {
            media_type: media_type_of(manifest).unwrap_or_else(|| OCI_MANIFEST.to_owned()),
            digest: Digest::of(manifest),
            size: manifest.len() as u64,
        }
    }
}

/// An artifact as the referrers API lists it: its manifest's descriptor,
/// with the artifact type and the manifest's annotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub artifact_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: Digest,
    size: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    artifact_type: &'a str,
    config: Descriptor<'a>,
    layers: [Descriptor<'a>; 1],
    subject: &'a Subject,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

/// The manifest that attaches `attachment` to `subject` (its blobs are
/// [`EMPTY_CONFIG`] and the attachment's bytes), and how it is listed.
pub fn artifact_manifest(attachment: &Attachment, subject: &Subject) -> (Vec<u8>, Referrer) {
    let document = ArtifactManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        artifact_type: attachment.media_type,
        config: Descriptor {
            media_type: OCI_EMPTY,
            digest: Digest::of(EMPTY_CONFIG),
            size: EMPTY_CONFIG.len() as u64,
            annotations: BTreeMap::new(),
        },
        layers: [Descriptor {
            media_type: attachment.media_type,
            digest: Digest::of(&attachment.bytes),
            size: attachment.bytes.len() as u64,
            annotations: BTreeMap::from([(TITLE.to_owned(), attachment.file_name.to_owned())]),
        }],
        subject,
        annotations: &attachment.annotations,
    };
    let manifest = serde_json::to_vec(&document).expect("artifact manifests serialize");
    let referrer = Referrer {
        media_type: OCI_MANIFEST.to_owned(),
        digest: Digest::of(&manifest),
        size: manifest.len() as u64,
        artifact_type: attachment.media_type.to_owned(),
        annotations: attachment.annotations.clone(),
    };
    (manifest, referrer)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrersIndex<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: &'a [Referrer],
}

/// The image index the referrers API answers with (also what the
/// referrers tag `sha256-<hex>` stands for).
pub fn referrers_index(referrers: &[Referrer]) -> Vec<u8> {
    let index = ReferrersIndex { schema_version: 2, media_type: OCI_INDEX, manifests: referrers };
    serde_json::to_vec(&index).expect("indexes serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_type::{CYCLONEDX_JSON, DOCKER_MANIFEST};

    #[test]
    fn an_artifact_refers_to_its_subject() {
        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
        let subject = Subject::of(image);
        assert_eq!((subject.media_type.as_str(), subject.size), (DOCKER_MANIFEST, image.len() as u64));
        let sbom = Attachment {
            media_type: CYCLONEDX_JSON,
            file_name: "sbom.cdx.json",
            bytes: b"{\"bomFormat\":\"CycloneDX\"}".to_vec(),
            annotations: BTreeMap::from([("org.opencontainers.image.created".into(), "2023-11-14T22:13:20Z".into())]),
        };
        let (manifest, referrer) = artifact_manifest(&sbom, &subject);
        let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(parsed["mediaType"], OCI_MANIFEST);
        assert_eq!(parsed["artifactType"], CYCLONEDX_JSON);
        assert_eq!(parsed["config"]["mediaType"], OCI_EMPTY);
        assert_eq!(
            parsed["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(parsed["layers"][0]["digest"], Digest::of(&sbom.bytes).to_string());
        assert_eq!(parsed["layers"][0]["annotations"][TITLE], "sbom.cdx.json");
        assert_eq!(parsed["subject"]["digest"], Digest::of(image).to_string());
        assert_eq!(parsed["subject"]["mediaType"], DOCKER_MANIFEST);
        assert_eq!(referrer.digest, Digest::of(&manifest));
        assert_eq!((referrer.artifact_type.as_str(), referrer.annotations.len()), (CYCLONEDX_JSON, 1));

        let index: serde_json::Value = serde_json::from_slice(&referrers_index(&[referrer])).unwrap();
        assert_eq!(index["mediaType"], OCI_INDEX);
        assert_eq!(index["manifests"][0]["artifactType"], CYCLONEDX_JSON);
        assert_eq!(index["manifests"][0]["size"], manifest.len());
        assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.created"], "2023-11-14T22:13:20Z");
        assert_eq!(
            referrers_index(&[]),
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
        );
    }
}

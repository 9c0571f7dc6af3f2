//! The media types of the manifests flakeforge serves (and of the artifacts
//! that refer to them), and the two manifest forms (OCI and Docker schema 2)
//! a tag resolves to. Below both the API (which negotiates the form) and the
//! service (which stores both).

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The config of an artifact manifest that has none (the two bytes `{}`).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// A CycloneDX SBOM in JSON: an image's bill of materials.
pub const CYCLONEDX_JSON: &str = "application/vnd.cyclonedx+json";
/// An in-toto statement (unsigned): an image's provenance.
pub const IN_TOTO_JSON: &str = "application/vnd.in-toto+json";

/// Which of the two manifest forms a client gets for a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum ManifestFormat {
    Oci,
    Docker,
}

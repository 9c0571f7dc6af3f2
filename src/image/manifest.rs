//! Image configs and manifests, serialized deterministically: the same
//! layers and settings give the same bytes, so the same digests, after a restart.

use std::collections::BTreeMap;

use serde::Serialize;

use super::compress::Compression;
use super::layer::LayerRecord;
use crate::digest::Digest;
use crate::media_type::{
    ManifestFormat, DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};

/// An OCI platform: what a Nix system is called in image configs and indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The OCI platform of a Nix system (`x86_64-linux` → `linux/amd64`), if it has one.
    pub fn of_nix_system(system: &str) -> Option<Platform> {
        let (cpu, os) = system.split_once('-')?;
        if os != "linux" {
            return None;
        }
        let (architecture, variant) = match cpu {
            "x86_64" => ("amd64", None),
            "i686" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "armv7l" => ("arm", Some("v7")),
            "armv6l" => ("arm", Some("v6")),
            "armv5tel" => ("arm", Some("v5")),
            "riscv64" => ("riscv64", None),
            "powerpc64le" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "mips64el" => ("mips64le", None),
            "loongarch64" => ("loong64", None),
            _ => return None,
        };
        Some(Platform { architecture: architecture.into(), os: "linux".into(), variant: variant.map(Into::into) })
    }

    /// The platform an image's config declares, completed by the Nix system
    /// it was built for: that system's platform when the config names no
    /// architecture, its variant (arm64 → v8) when the architectures agree
    /// and the config names none.
    pub fn declared(architecture: Option<&str>, os: Option<&str>, variant: Option<&str>, system: &str) -> Option<Self> {
        let served = Platform::of_nix_system(system);
        let Some(architecture) = architecture.filter(|a| !a.is_empty()) else { return served };
        let variant = variant
            .map(String::from)
            .or_else(|| served.filter(|p| p.architecture == architecture).and_then(|p| p.variant));
        Some(Platform { architecture: architecture.into(), os: os.unwrap_or("linux").into(), variant })
    }
}

/// The parts of an image config that are not the layers.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    pub platform: Platform,
    pub created: String,
    pub config: serde_json::Value,
    /// The config blob exactly as the image carries it (a docker archive's,
    /// the one nix2container writes), served byte for byte instead of one
    /// written here, so that the image ID is the one `docker load` gives.
    /// Its `diff_ids` are those the layers are checked against.
    pub blob: Option<Vec<u8>>,
}

#[derive(Serialize)]
struct ConfigDocument<'a> {
    architecture: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    os: &'a str,
    created: &'a str,
    config: &'a serde_json::Value,
    rootfs: RootFs,
    history: Vec<History<'a>>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<Digest>,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    comment: String,
}

/// The image config JSON for these layers.
pub fn config_json(image: &ImageConfig, layers: &[LayerRecord]) -> Vec<u8> {
    if let Some(blob) = &image.blob {
        return blob.clone();
    }
    let document = ConfigDocument {
        architecture: &image.platform.architecture,
        variant: image.platform.variant.as_deref(),
        os: &image.platform.os,
        created: &image.created,
        config: &image.config,
        rootfs: RootFs { kind: "layers", diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect() },
        history: layers.iter().map(|l| History { created: &image.created, comment: l.source.describe() }).collect(),
    };
    serde_json::to_vec(&document).expect("image configs serialize")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: &'a Digest,
    size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDocument<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a BTreeMap<String, String>>,
}

/// The OCI form carries annotations; Docker schema 2 has no place for them.
fn oci_annotations(
    format: ManifestFormat,
    annotations: &BTreeMap<String, String>,
) -> Option<&BTreeMap<String, String>> {
    (format == ManifestFormat::Oci && !annotations.is_empty()).then_some(annotations)
}

/// The image manifest in the given form, for a config blob and its layers,
/// with `annotations` in the OCI form.
pub fn manifest_json(
    format: ManifestFormat,
    config: &[u8],
    layers: &[LayerRecord],
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let config_digest = Digest::of(config);
    let (media_type, config_type, layer_type): (_, _, fn(Compression) -> &'static str) = match format {
        ManifestFormat::Oci => (OCI_MANIFEST, OCI_CONFIG, Compression::oci_layer_media_type),
        ManifestFormat::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG, Compression::docker_layer_media_type),
    };
    let document = ManifestDocument {
        schema_version: 2,
        media_type,
        config: Descriptor { media_type: config_type, digest: &config_digest, size: config.len() as u64 },
        layers: layers
            .iter()
            .map(|l| Descriptor { media_type: layer_type(l.compression), digest: &l.digest, size: l.size })
            .collect(),
        annotations: oci_annotations(format, annotations),
    };
    serde_json::to_vec(&document).expect("manifests serialize")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry<'a> {
    media_type: &'a str,
    digest: &'a Digest,
    size: u64,
    platform: &'a Platform,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexDocument<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<IndexEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a BTreeMap<String, String>>,
}

/// An image index (OCI, with `annotations`) or manifest list (Docker) over
/// per-platform manifests of the same form, given as (platform, manifest bytes).
pub fn index_json(
    format: ManifestFormat,
    entries: &[(Platform, Vec<u8>)],
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let (media_type, entry_type) = match format {
        ManifestFormat::Oci => (OCI_INDEX, OCI_MANIFEST),
        ManifestFormat::Docker => (DOCKER_MANIFEST_LIST, DOCKER_MANIFEST),
    };
    let digests: Vec<Digest> = entries.iter().map(|(_, manifest)| Digest::of(manifest)).collect();
    let document = IndexDocument {
        schema_version: 2,
        media_type,
        manifests: entries
            .iter()
            .zip(&digests)
            .map(|((platform, manifest), digest)| IndexEntry {
                media_type: entry_type,
                digest,
                size: manifest.len() as u64,
                platform,
            })
            .collect(),
        annotations: oci_annotations(format, annotations),
    };
    serde_json::to_vec(&document).expect("indexes serialize")
}

/// The media type a stored manifest declares (both forms carry `mediaType`).
pub fn media_type_of(manifest: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    value.get("mediaType")?.as_str().map(str::to_string)
}

/// What a stored manifest points to by digest: an index's manifests, an
/// image manifest's config and layers (in that order).
pub fn referenced_digests(manifest: &[u8]) -> Vec<Digest> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(manifest) else { return Vec::new() };
    let config = value.get("config").into_iter();
    let listed = ["manifests", "layers"].into_iter().filter_map(|key| value.get(key)?.as_array()).flatten();
    config.chain(listed).filter_map(|descriptor| descriptor.get("digest")?.as_str()?.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::layer::LayerSource;

    fn layer(n: u8) -> LayerRecord {
        LayerRecord {
            source: LayerSource::TarFile { path: format!("/nix/store/x{n}/layer.tar").into(), diff_id: None },
            compression: Compression::default(),
            diff_id: Digest::of(&[n]),
            digest: Digest::of(&[n, n]),
            size: 100 + n as u64,
        }
    }

    #[test]
    fn index_lists_platforms() {
        let amd64 = Platform::of_nix_system("x86_64-linux").unwrap();
        let arm64 = Platform::of_nix_system("aarch64-linux").unwrap();
        let entries = vec![(amd64, b"{\"a\":1}".to_vec()), (arm64, b"{\"b\":2}".to_vec())];
        let annotations = BTreeMap::from([("org.opencontainers.image.title".to_string(), "arch".to_string())]);
        let docker = index_json(ManifestFormat::Docker, &entries, &annotations);
        let docker: serde_json::Value = serde_json::from_slice(&docker).unwrap();
        assert!(docker.get("annotations").is_none());
        assert_eq!(docker["mediaType"], DOCKER_MANIFEST_LIST);
        assert_eq!(docker["manifests"][0]["mediaType"], DOCKER_MANIFEST);
        assert_eq!(
            docker["manifests"][1]["platform"],
            serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
        );
        assert_eq!(docker["manifests"][1]["digest"], Digest::of(b"{\"b\":2}").to_string());
        assert_eq!(docker["manifests"][1]["size"], 7);
        let oci = index_json(ManifestFormat::Oci, &entries, &annotations);
        assert_eq!(media_type_of(&oci).as_deref(), Some(OCI_INDEX));
        let oci: serde_json::Value = serde_json::from_slice(&oci).unwrap();
        assert_eq!(oci["annotations"]["org.opencontainers.image.title"], "arch");
    }

    #[test]
    fn platforms() {
        assert_eq!(Platform::of_nix_system("x86_64-linux").unwrap().architecture, "amd64");
        let arm = Platform::of_nix_system("aarch64-linux").unwrap();
        assert_eq!((arm.architecture.as_str(), arm.variant.as_deref()), ("arm64", Some("v8")));
        assert!(Platform::of_nix_system("x86_64-darwin").is_none());
    }

    #[test]
    fn manifests_are_deterministic_and_typed() {
        let image = ImageConfig {
            platform: Platform::of_nix_system("x86_64-linux").unwrap(),
            created: "1970-01-01T00:00:01Z".into(),
            config: serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/hello"]}),
            blob: None,
        };
        let layers = [layer(1), layer(2)];
        let config = config_json(&image, &layers);
        assert_eq!(config, config_json(&image, &layers));
        let parsed: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(parsed["rootfs"]["diff_ids"][1], Digest::of(&[2]).to_string());
        assert_eq!(parsed["architecture"], "amd64");

        let none = BTreeMap::new();
        assert!(!String::from_utf8(manifest_json(ManifestFormat::Oci, &config, &layers, &none))
            .unwrap()
            .contains("annotations"));
        let annotations = BTreeMap::from([("org.opencontainers.image.revision".to_string(), "abc".to_string())]);
        let oci = manifest_json(ManifestFormat::Oci, &config, &layers, &annotations);
        let docker = manifest_json(ManifestFormat::Docker, &config, &layers, &annotations);
        let parsed: serde_json::Value = serde_json::from_slice(&oci).unwrap();
        assert_eq!(parsed["annotations"]["org.opencontainers.image.revision"], "abc");
        assert_eq!(media_type_of(&oci).as_deref(), Some(OCI_MANIFEST));
        assert_eq!(media_type_of(&docker).as_deref(), Some(DOCKER_MANIFEST));
        let parsed: serde_json::Value = serde_json::from_slice(&docker).unwrap();
        assert_eq!(parsed["config"]["digest"], Digest::of(&config).to_string());
        assert_eq!(parsed["config"]["mediaType"], DOCKER_CONFIG);
        assert_eq!(parsed["layers"][0]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
        assert_eq!(parsed["layers"][1]["size"], 102);
        let config_digest = Digest::of(&config);
        assert_eq!(referenced_digests(&oci), [config_digest, layers[0].digest.clone(), layers[1].digest.clone()]);
        let index = index_json(ManifestFormat::Oci, &[(image.platform.clone(), oci.clone())], &none);
        assert_eq!(referenced_digests(&index), [Digest::of(&oci)]);
        assert!(referenced_digests(b"not json").is_empty());
    }
}

//! An image's bill of materials in CycloneDX 1.5 JSON, from what Nix knows
//! of it: one component per store path of the closure of what its layers
//! are made from (name and version from its derivation, the NAR hash, and
//! the license, homepage and description of the flake's package where its
//! `meta` says them), one per layer that is a ready tarball (a base image's
//! layer, a customisation layer), the references between store paths as
//! the dependency graph, and the image itself as the metadata component,
//! with the flake, its locked revision and the attributes built.
//!
//! Deterministic: the same image gives the same bytes. There is no
//! timestamp, and the serial number is a UUID (version 5) of the content.
//! The types below are the part of CycloneDX this writes, no more.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use base64::Engine;
use serde::Serialize;

use super::layer::{LayerRecord, LayerSource};
use super::manifest::Platform;
use super::origin::ImageOrigin;
use crate::digest::Digest;
use crate::nix::derivation::{parse_name, store_path_name, store_path_of, License, PackageMeta, PackageName};
use crate::nix::PathInfo;

/// The `bom-ref` of the image, the metadata component.
const IMAGE_REF: &str = "image";

/// What the SBOM of one image is made from.
pub struct BomInput<'a> {
    pub origin: &'a ImageOrigin,
    pub platform: &'a Platform,
    /// The image config's digest: the image ID.
    pub config_digest: &'a Digest,
    pub layers: &'a [LayerRecord],
    /// The closure of [`store_roots`] of the layers.
    pub closure: &'a [PathInfo],
    /// The name and version of each path of the closure.
    pub names: &'a BTreeMap<PathBuf, PackageName>,
    /// The meta of each package of the origin, in its order.
    pub metas: &'a [PackageMeta],
}

/// The store paths the layers are made from: their store paths, and the
/// store paths holding their tarballs and archives; sorted.
pub fn store_roots(layers: &[LayerSource]) -> Vec<PathBuf> {
    let mut roots = BTreeSet::new();
    for layer in layers {
        match layer {
            LayerSource::StorePaths { paths, .. } => roots.extend(paths.iter().cloned()),
            LayerSource::Rootfs { packages, .. } => roots.extend(packages.iter().cloned()),
            LayerSource::Nix2Container { paths, .. } => roots.extend(paths.iter().map(|p| p.path.clone())),
            LayerSource::TarFile { path, .. } => roots.extend(store_path_of(path)),
            LayerSource::ArchiveMember { archive, .. } => roots.extend(store_path_of(archive)),
        }
    }
    roots.into_iter().collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bom {
    bom_format: &'static str,
    spec_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial_number: Option<String>,
    version: u32,
    metadata: Metadata,
    components: Vec<Component>,
    dependencies: Vec<Dependency>,
}

#[derive(Serialize)]
struct Metadata {
    tools: Tools,
    component: Component,
}

#[derive(Serialize)]
struct Tools {
    components: Vec<Component>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Component {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref", skip_serializing_if = "Option::is_none")]
    bom_ref: Option<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hashes: Vec<Hash>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    licenses: Vec<LicenseChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purl: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_references: Vec<ExternalReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

#[derive(Serialize)]
struct Hash {
    alg: &'static str,
    content: String,
}

#[derive(Serialize)]
struct LicenseChoice {
    license: LicenseBody,
}

/// Exactly one of `id` (an SPDX identifier) and `name`.
#[derive(Serialize)]
struct LicenseBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

#[derive(Serialize)]
struct ExternalReference {
    #[serde(rename = "type")]
    kind: &'static str,
    url: String,
}

#[derive(Serialize)]
struct Property {
    name: String,
    value: String,
}

fn property(name: &str, value: impl Into<String>) -> Property {
    Property { name: name.to_owned(), value: value.into() }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Dependency {
    #[serde(rename = "ref")]
    reference: String,
    depends_on: Vec<String>,
}

/// The CycloneDX JSON of the image `input` describes.
pub fn cyclonedx(input: &BomInput) -> Vec<u8> {
    let closure_paths: BTreeSet<&PathBuf> = input.closure.iter().map(|info| &info.path).collect();
    // Each package's meta goes to its outputs in the image.
    let mut meta_of: BTreeMap<&PathBuf, &PackageMeta> = BTreeMap::new();
    for (package, meta) in input.origin.packages.iter().zip(input.metas) {
        for output in &package.outputs {
            meta_of.insert(output, meta);
        }
    }

    let mut components: Vec<Component> = input
        .closure
        .iter()
        .map(|info| store_path_component(info, input.names.get(&info.path), meta_of.get(&info.path).copied()))
        .collect();
    let mut dependencies: Vec<Dependency> = input
        .closure
        .iter()
        .map(|info| Dependency {
            reference: path_ref(&info.path),
            depends_on: info
                .references
                .iter()
                .filter(|r| **r != info.path && closure_paths.contains(r))
                .map(|r| path_ref(r))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        })
        .collect();

    // What nothing else in the closure refers to is what the image holds at its top.
    let referenced: BTreeSet<&PathBuf> =
        input.closure.iter().flat_map(|info| info.references.iter().filter(move |r| **r != info.path)).collect();
    let mut image_depends_on: Vec<String> =
        input.closure.iter().filter(|info| !referenced.contains(&info.path)).map(|info| path_ref(&info.path)).collect();

    let mut layer_refs = BTreeSet::new();
    for (index, layer) in input.layers.iter().enumerate() {
        let Some(component) = tarball_component(index, layer) else { continue };
        let reference = component.bom_ref.clone().expect("layers have a bom-ref");
        if layer_refs.insert(reference.clone()) {
            image_depends_on.push(reference.clone());
            dependencies.push(Dependency { reference, depends_on: Vec::new() });
            components.push(component);
        }
    }
    dependencies.insert(0, Dependency { reference: IMAGE_REF.to_owned(), depends_on: image_depends_on });

    let mut bom = Bom {
        bom_format: "CycloneDX",
        spec_version: "1.5",
        serial_number: None,
        version: 1,
        metadata: Metadata { tools: Tools { components: vec![flakeforge_tool()] }, component: image_component(input) },
        components,
        dependencies,
    };
    // The serial number is the content's: a UUID (version 5) of the digest of the rest.
    let content = Digest::of(&serde_json::to_vec(&bom).expect("BOMs serialize"));
    let name = format!("urn:flakeforge:sbom:{content}");
    bom.serial_number = Some(format!("urn:uuid:{}", uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())));
    serde_json::to_vec(&bom).expect("BOMs serialize")
}

fn path_ref(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

fn store_path_component(info: &PathInfo, name: Option<&PackageName>, meta: Option<&PackageMeta>) -> Component {
    let name = name.cloned().unwrap_or_else(|| parse_name(&store_path_name(&info.path)));
    let mut properties =
        vec![property("nix:store_path", path_ref(&info.path)), property("nix:nar_size", info.nar_size.to_string())];
    if let Some(deriver) = &info.deriver {
        properties.push(property("nix:deriver", path_ref(deriver)));
    }
    let mut component = Component {
        kind: if meta.is_some() { "application" } else { "library" },
        bom_ref: Some(path_ref(&info.path)),
        name: name.name.clone(),
        version: name.version.clone(),
        scope: Some("required"),
        hashes: sha256_of_nar_hash(&info.nar_hash)
            .map(|content| Hash { alg: "SHA-256", content })
            .into_iter()
            .collect(),
        purl: Some(purl(&name.name, name.version.as_deref())),
        properties,
        ..Component::default()
    };
    if let Some(meta) = meta {
        describe(&mut component, meta);
    }
    component
}

/// A layer that is a ready tarball, as a file: a base image's layer, a
/// customisation layer. Layers of store paths are their store paths. Its
/// name is where it is: `base-image.tar/layer.tar` (a member of that
/// archive), `customisation-layer/layer.tar`.
fn tarball_component(index: usize, layer: &LayerRecord) -> Option<Component> {
    let (origin, member) = match &layer.source {
        LayerSource::ArchiveMember { archive, member, .. } => (archive, Some(member)),
        LayerSource::TarFile { path, .. } => (path, None),
        _ => return None,
    };
    let mut name = match store_path_of(origin) {
        Some(store_path) => {
            let within = origin.strip_prefix(&store_path).unwrap_or(origin);
            [store_path_name(&store_path), within.to_string_lossy().into_owned()]
                .into_iter()
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join("/")
        }
        None => path_ref(origin),
    };
    if let Some(member) = member {
        name = format!("{name}/{member}");
    }
    Some(Component {
        kind: "file",
        bom_ref: Some(format!("layer:{}", layer.diff_id)),
        name,
        description: Some(format!("layer {} of the image", index + 1)),
        hashes: vec![Hash { alg: "SHA-256", content: layer.diff_id.hex().to_owned() }],
        properties: vec![
            property("flakeforge:layer:diff_id", layer.diff_id.to_string()),
            property("flakeforge:layer:digest", layer.digest.to_string()),
            property("flakeforge:layer:source", path_ref(origin)),
        ],
        ..Component::default()
    })
}

fn image_component(input: &BomInput) -> Component {
    let origin = input.origin;
    let platform = input.platform;
    let mut properties = vec![
        property("flakeforge:flake", origin.flake.clone()),
        property("flakeforge:flake:locked", origin.source_url()),
        property("flakeforge:flake:revision", origin.locked.revision.clone()),
    ];
    properties.extend(origin.locked.nar_hash.as_ref().map(|hash| property("flakeforge:flake:narHash", hash.clone())));
    properties.extend(origin.created().map(|created| property("flakeforge:flake:lastModified", created)));
    properties
        .extend(origin.packages.iter().map(|package| property("flakeforge:attribute", package.attr_path.clone())));
    properties.push(property("flakeforge:system", origin.system.clone()));
    let mut os_arch = format!("{}/{}", platform.os, platform.architecture);
    if let Some(variant) = &platform.variant {
        os_arch = format!("{os_arch}/{variant}");
    }
    properties.push(property("flakeforge:platform", os_arch));
    properties.push(property("flakeforge:image:config", input.config_digest.to_string()));
    let mut component = Component {
        kind: "container",
        bom_ref: Some(IMAGE_REF.to_owned()),
        name: origin.name.clone(),
        version: origin.version().map(str::to_owned),
        properties,
        ..Component::default()
    };
    if let [meta] = input.metas {
        describe(&mut component, meta);
    }
    component
}

/// Adds what a package's meta says: licenses, description, homepage.
fn describe(component: &mut Component, meta: &PackageMeta) {
    component.licenses = meta.licenses.iter().filter_map(license).collect();
    component.description.clone_from(&meta.description);
    component.external_references =
        meta.homepage.iter().map(|url| ExternalReference { kind: "website", url: url.clone() }).collect();
}

fn license(license: &License) -> Option<LicenseChoice> {
    let body = match (&license.spdx_id, &license.name) {
        (Some(id), _) => LicenseBody { id: Some(id.clone()), name: None, url: license.url.clone() },
        (None, Some(name)) => LicenseBody { id: None, name: Some(name.clone()), url: license.url.clone() },
        (None, None) => return None,
    };
    Some(LicenseChoice { license: body })
}

fn flakeforge_tool() -> Component {
    Component {
        kind: "application",
        name: "flakeforge".into(),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        ..Component::default()
    }
}

/// The hex SHA-256 of a NAR hash as Nix prints it (`sha256-<base64>`, or
/// `sha256:<hex>`); `None` for anything else.
fn sha256_of_nar_hash(nar_hash: &str) -> Option<String> {
    if let Some(base64) = nar_hash.strip_prefix("sha256-") {
        let bytes = base64::engine::general_purpose::STANDARD.decode(base64).ok()?;
        let hash: [u8; 32] = bytes.try_into().ok()?;
        return Some(Digest::from_hash(hash).hex().to_owned());
    }
    let hex = nar_hash.strip_prefix("sha256:")?;
    Digest::from_hex(hex).ok().map(|digest| digest.hex().to_owned())
}

/// `pkg:nix/NAME@VERSION`, each part percent-encoded as purl wants.
fn purl(name: &str, version: Option<&str>) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    match version {
        Some(version) => format!("pkg:nix/{}@{}", encode(name), encode(version)),
        None => format!("pkg:nix/{}", encode(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::compress::Compression;
    use crate::image::origin::OriginPackage;
    use crate::nix::LockedFlake;

    const HELLO: &str = "/nix/store/lwqrax7naqf5ljhw3v1b34jq7mriy2v3-hello-2.12";
    const BUSYBOX: &str = "/nix/store/m2k4cp1vmadlq9mg8ynxh6m259rr2zfs-busybox-1.36.1";
    const TOOLS: &str = "/nix/store/cirm5218ycrpsrr26g6j9r8g57qjvrbr-test-tools";
    const BASE: &str = "/nix/store/9n0d3v4h2n3mg1qmvqc8hwqllr5rz6i3-base-image.tar";

    fn origin() -> ImageOrigin {
        ImageOrigin {
            name: "hello".into(),
            flake: "github:me/images".into(),
            locked: LockedFlake {
                url: "github:me/images/0123456789abcdef0123456789abcdef01234567".into(),
                revision: "0123456789abcdef0123456789abcdef01234567".into(),
                last_modified: Some(1_700_000_000),
                nar_hash: Some("sha256-iIriJEb+y+uT0mNG29IRsX3+zEqVDDjQsrepLObkWIM=".into()),
                inputs: vec![],
            },
            system: "x86_64-linux".into(),
            packages: vec![OriginPackage {
                attr_path: "packages.x86_64-linux.hello".into(),
                outputs: vec![HELLO.into()],
                version: Some("2.12".into()),
            }],
        }
    }

    fn closure() -> Vec<PathInfo> {
        vec![
            PathInfo {
                path: HELLO.into(),
                nar_size: 528,
                nar_hash: "sha256-5B8K/6GmLCFfIV3lSI36dDmfo6cUSxhtpaG/xNNkakY=".into(),
                references: vec![BUSYBOX.into(), HELLO.into()],
                deriver: Some("/nix/store/ngy09v38f3349kx08pr1kgvb4cxp2drb-hello-2.12.drv".into()),
            },
            PathInfo {
                path: BUSYBOX.into(),
                nar_size: 1982736,
                nar_hash: "sha256-SUza0DfPfQp17oFvwGC5JmPeEwlgKv9DwvnOVdreTEA=".into(),
                ..PathInfo::default()
            },
        ]
    }

    fn base_layer() -> LayerRecord {
        LayerRecord {
            source: LayerSource::ArchiveMember { archive: BASE.into(), member: "layer.tar".into(), diff_id: None },
            compression: Compression::default(),
            diff_id: Digest::of(b"tar"),
            digest: Digest::of(b"gz"),
            size: 2,
        }
    }

    fn document(layers: &[LayerRecord]) -> serde_json::Value {
        let origin = origin();
        let names = BTreeMap::from([
            (PathBuf::from(HELLO), PackageName { name: "hello".into(), version: Some("2.12".into()) }),
            (PathBuf::from(BUSYBOX), PackageName { name: "busybox".into(), version: Some("1.36.1".into()) }),
        ]);
        let metas = [PackageMeta {
            licenses: vec![License {
                spdx_id: Some("GPL-3.0-or-later".into()),
                name: Some("GNU GPL v3+".into()),
                url: None,
            }],
            homepage: Some("https://example.org/hello".into()),
            description: Some("says hello".into()),
        }];
        let closure = closure();
        let input = BomInput {
            origin: &origin,
            platform: &Platform::of_nix_system("x86_64-linux").unwrap(),
            config_digest: &Digest::of(b"config"),
            layers,
            closure: &closure,
            names: &names,
            metas: &metas,
        };
        let bytes = cyclonedx(&input);
        assert_eq!(bytes, cyclonedx(&input), "the same image gives the same bytes");
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn components_are_the_closure_with_names_hashes_and_meta() {
        let bom = document(&[]);
        assert_eq!((bom["bomFormat"].as_str(), bom["specVersion"].as_str()), (Some("CycloneDX"), Some("1.5")));
        let serial = bom["serialNumber"].as_str().unwrap();
        assert!(serial.starts_with("urn:uuid:") && serial.as_bytes()[23] == b'5', "{serial}");
        let hello = &bom["components"][0];
        assert_eq!(hello["bom-ref"], HELLO);
        assert_eq!((hello["name"].as_str(), hello["version"].as_str()), (Some("hello"), Some("2.12")));
        assert_eq!(hello["type"], "application");
        assert_eq!(hello["purl"], "pkg:nix/hello@2.12");
        assert_eq!(hello["hashes"][0]["alg"], "SHA-256");
        assert_eq!(hello["hashes"][0]["content"], "e41f0affa1a62c215f215de5488dfa74399fa3a7144b186da5a1bfc4d3646a46");
        assert_eq!(hello["licenses"][0]["license"]["id"], "GPL-3.0-or-later");
        assert!(hello["licenses"][0]["license"].get("name").is_none());
        assert_eq!(hello["externalReferences"][0]["url"], "https://example.org/hello");
        assert_eq!(bom["components"][1]["type"], "library");
        assert!(bom["components"][1].get("licenses").is_none());

        let image = &bom["metadata"]["component"];
        assert_eq!((image["type"].as_str(), image["name"].as_str()), (Some("container"), Some("hello")));
        assert_eq!(image["description"], "says hello");
        let properties: BTreeMap<&str, &str> = image["properties"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["value"].as_str().unwrap()))
            .collect();
        assert_eq!(properties["flakeforge:flake:revision"], "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(properties["flakeforge:attribute"], "packages.x86_64-linux.hello");
        assert_eq!(properties["flakeforge:platform"], "linux/amd64");
        assert_eq!(bom["metadata"]["tools"]["components"][0]["name"], "flakeforge");
        assert!(bom["metadata"].get("timestamp").is_none());
    }

    #[test]
    fn dependencies_are_the_references() {
        let bom = document(&[]);
        let dependencies = &bom["dependencies"];
        assert_eq!(dependencies[0], serde_json::json!({"ref": "image", "dependsOn": [HELLO]}));
        // A path's reference to itself is no dependency.
        assert_eq!(dependencies[1], serde_json::json!({"ref": HELLO, "dependsOn": [BUSYBOX]}));
        assert_eq!(dependencies[2], serde_json::json!({"ref": BUSYBOX, "dependsOn": []}));
    }

    #[test]
    fn base_image_layers_are_files() {
        let bom = document(&[base_layer(), base_layer()]);
        let components = bom["components"].as_array().unwrap();
        assert_eq!(components.len(), 3, "a layer twice is one component");
        let layer = &components[2];
        assert_eq!(layer["type"], "file");
        assert_eq!(layer["name"], "base-image.tar/layer.tar");
        assert_eq!(layer["hashes"][0]["content"], Digest::of(b"tar").hex());
        let reference = format!("layer:{}", Digest::of(b"tar"));
        assert_eq!(bom["dependencies"][0]["dependsOn"], serde_json::json!([HELLO, reference]));
    }

    #[test]
    fn tarball_layers_are_named_by_where_they_are() {
        let record = |source| LayerRecord { source, ..base_layer() };
        let name = |source| tarball_component(0, &record(source)).unwrap().name;
        assert_eq!(
            name(LayerSource::TarFile { path: format!("{TOOLS}/layer.tar").into(), diff_id: None }),
            "test-tools/layer.tar"
        );
        let file = "/nix/store/0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p-layer.tar.gz";
        assert_eq!(name(LayerSource::TarFile { path: file.into(), diff_id: None }), "layer.tar.gz");
        let member = LayerSource::ArchiveMember {
            archive: format!("{TOOLS}/web.tar").into(),
            member: "a/layer.tar".into(),
            diff_id: None,
        };
        assert_eq!(name(member), "test-tools/web.tar/a/layer.tar");
    }

    #[test]
    fn roots_are_the_store_paths_layers_come_from() {
        let owner = crate::image::Ownership::default();
        let layers = [
            LayerSource::StorePaths { paths: vec![BUSYBOX.into()], owner: owner.clone() },
            LayerSource::Rootfs { packages: vec![HELLO.into()], owner },
            LayerSource::TarFile { path: format!("{TOOLS}/layer.tar").into(), diff_id: None },
            LayerSource::ArchiveMember { archive: BASE.into(), member: "x/layer.tar".into(), diff_id: None },
        ];
        let roots: Vec<PathBuf> =
            [BASE, TOOLS, HELLO, BUSYBOX].iter().map(PathBuf::from).collect::<BTreeSet<_>>().into_iter().collect();
        assert_eq!(store_roots(&layers), roots);
    }

    #[test]
    fn nar_hashes_and_purls() {
        assert_eq!(sha256_of_nar_hash(&format!("sha256:{}", "ab".repeat(32))), Some("ab".repeat(32)));
        assert_eq!(sha256_of_nar_hash("sha256-short"), None);
        assert_eq!(sha256_of_nar_hash("md5-abc"), None);
        assert_eq!(purl("gtk+3", Some("3.24.0")), "pkg:nix/gtk%2B3@3.24.0");
        assert_eq!(purl("test-tools", None), "pkg:nix/test-tools");
    }
}

//! Docker archives: what `docker save` writes and `docker load` reads, the
//! output of nixpkgs' `dockerTools.buildImage`, `buildLayeredImage` and
//! `pullImage`, and a streamLayeredImage's `from_image`. A tarball, plain,
//! gzip or zstd ([`super::archive`]), in one of two layouts:
//! - `manifest.json` (Docker 1.10 and later): its first image's `Config`
//!   member is the image config, its `Layers` the layer members, bottom
//!   first, each of which must hash to the config's `rootfs.diff_ids`;
//! - `repositories` alone (older `docker save`): the image its first name
//!   and tag point at, a chain of `<id>/json` linked by `parent`, each with
//!   its `<id>/layer.tar`; the top `json` holds the config.
//!
//! buildImage writes both (`<id>/layer.tar` members listed by a
//! `manifest.json`): `manifest.json` wins. The archive is read once here,
//! keeping only its small JSON members; layers are streamed from it when
//! they are generated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::archive::{self, member_name};
use super::layer::LayerSource;
use super::manifest::{ImageConfig, Platform};
use super::{ImageRecipe, InvalidImage};
use crate::digest::Digest;

/// Members that may be JSON (first byte `{` or `[`) up to this size are
/// kept while the archive is read: configs, `manifest.json`, `repositories`.
const JSON_MEMBER_LIMIT: u64 = 16 << 20;
/// At most this much JSON is kept in all.
const JSON_TOTAL_LIMIT: u64 = 64 << 20;

/// One layer: its member and, where the archive records one, its diff_id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveLayer {
    pub member: String,
    pub diff_id: Option<Digest>,
}

#[derive(Debug)]
pub struct DockerArchive {
    pub layers: Vec<ArchiveLayer>,
    config: ArchiveConfig,
}

#[derive(Debug)]
enum ArchiveConfig {
    /// The config document `manifest.json` names, served byte for byte.
    Document { bytes: Vec<u8>, value: Value },
    /// An old archive's top layer `json` (its `config`, `created`, `architecture`...).
    Legacy(Value),
}

fn invalid(message: impl Into<String>) -> InvalidImage {
    InvalidImage(format!("not a usable docker archive: {}", message.into()))
}

impl DockerArchive {
    /// Reads the archive at `path` once. `Ok(None)`: a whole tarball that
    /// is no docker archive (neither `manifest.json` nor `repositories`).
    pub fn open(path: &Path) -> Result<Option<DockerArchive>, InvalidImage> {
        let mut members = HashSet::new();
        let mut json = HashMap::new();
        let mut kept = 0;
        archive::for_each_member(path, |name, size, data| {
            members.insert(name.to_string());
            if size > JSON_MEMBER_LIMIT || kept + size > JSON_TOTAL_LIMIT {
                return Ok(None::<()>);
            }
            let mut first = Vec::with_capacity(1);
            data.take(1).read_to_end(&mut first)?;
            if matches!(first.as_slice(), b"{" | b"[") {
                data.read_to_end(&mut first)?;
                kept += size;
                json.insert(name.to_string(), first);
            }
            Ok(None)
        })
        .map_err(|e| InvalidImage(format!("the docker archive cannot be read: {e}")))?;
        if let Some(manifest) = json.get("manifest.json") {
            return manifest_layout(manifest, &json, &members).map(Some);
        }
        if let Some(repositories) = json.get("repositories") {
            return legacy_layout(repositories, &json, &members).map(Some);
        }
        Ok(None)
    }

    /// The config's `config` (`Env`, `Cmd`, ...), as a `from_image` base lends it.
    pub fn container_config(&self) -> Option<&Value> {
        match &self.config {
            ArchiveConfig::Document { value, .. } | ArchiveConfig::Legacy(value) => value.get("config"),
        }
    }

    /// The image the archive at `archive` holds, as built for `system`.
    pub fn recipe(&self, archive: &Path, system: &str) -> Result<ImageRecipe, InvalidImage> {
        let layers = self
            .layers
            .iter()
            .map(|layer| LayerSource::ArchiveMember {
                archive: archive.to_path_buf(),
                member: layer.member.clone(),
                diff_id: layer.diff_id.clone(),
            })
            .collect();
        let (value, blob) = match &self.config {
            ArchiveConfig::Document { bytes, value } => (value, Some(bytes.clone())),
            ArchiveConfig::Legacy(value) => (value, None),
        };
        let text = |key: &str| value.get(key).and_then(Value::as_str);
        let platform = Platform::declared(text("architecture"), text("os"), text("variant"), system)
            .ok_or_else(|| invalid(format!("it names no architecture and {system} has no OCI platform")))?;
        let config = ImageConfig {
            platform,
            created: text("created").unwrap_or("1970-01-01T00:00:01Z").to_string(),
            config: value.get("config").filter(|c| c.is_object()).cloned().unwrap_or_else(|| serde_json::json!({})),
            blob,
        };
        Ok(ImageRecipe { layers, config })
    }
}

fn parse(member: &str, bytes: &[u8]) -> Result<Value, InvalidImage> {
    serde_json::from_slice(bytes).map_err(|e| invalid(format!("{member}: {e}")))
}

fn manifest_layout(
    manifest: &[u8],
    json: &HashMap<String, Vec<u8>>,
    members: &HashSet<String>,
) -> Result<DockerArchive, InvalidImage> {
    let manifest = parse("manifest.json", manifest)?;
    let image = manifest.get(0).ok_or_else(|| invalid("manifest.json lists no image"))?;
    let config_member = image["Config"].as_str().ok_or_else(|| invalid("manifest.json names no Config"))?;
    let bytes = json
        .get(member_name(config_member))
        .ok_or_else(|| invalid(format!("it does not hold the config {config_member} manifest.json names")))?
        .clone();
    let value = parse(config_member, &bytes)?;
    let members_listed = image["Layers"].as_array().ok_or_else(|| invalid("manifest.json names no Layers"))?;
    let diff_ids = value["rootfs"]["diff_ids"].as_array().map(Vec::as_slice).unwrap_or_default();
    if diff_ids.len() != members_listed.len() {
        let (d, l) = (diff_ids.len(), members_listed.len());
        return Err(invalid(format!("its config lists {d} diff_ids for {l} layers")));
    }
    let mut layers = Vec::new();
    for (member, diff_id) in members_listed.iter().zip(diff_ids) {
        let member = member.as_str().ok_or_else(|| invalid("a layer in manifest.json is not a name"))?;
        if !members.contains(member_name(member)) {
            return Err(invalid(format!("it does not hold the layer {member} manifest.json names")));
        }
        let diff_id = diff_id.as_str().and_then(|d| d.parse().ok());
        let diff_id = diff_id.ok_or_else(|| invalid(format!("the diff_id of {member} is not a sha256 digest")))?;
        layers.push(ArchiveLayer { member: member.to_string(), diff_id: Some(diff_id) });
    }
    Ok(DockerArchive { layers, config: ArchiveConfig::Document { bytes, value } })
}

fn legacy_layout(
    repositories: &[u8],
    json: &HashMap<String, Vec<u8>>,
    members: &HashSet<String>,
) -> Result<DockerArchive, InvalidImage> {
    let repositories: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_slice(repositories).map_err(|e| invalid(format!("repositories: {e}")))?;
    let top = repositories.values().flat_map(BTreeMap::values).next();
    let mut id = top.ok_or_else(|| invalid("repositories names no image"))?.clone();
    let mut chain = Vec::new();
    loop {
        if chain.len() > members.len() {
            return Err(invalid("the parent links of its layers form a loop"));
        }
        let member = format!("{id}/json");
        let value = parse(&member, json.get(&member).ok_or_else(|| invalid(format!("it has no {member}")))?)?;
        let parent = value.get("parent").and_then(Value::as_str).filter(|p| !p.is_empty()).map(String::from);
        chain.push((id, value));
        match parent {
            Some(parent) => id = parent,
            None => break,
        }
    }
    let top_config = chain[0].1.clone();
    let mut layers = Vec::new();
    for (id, _) in chain.iter().rev() {
        let member = format!("{id}/layer.tar");
        if !members.contains(&member) {
            return Err(invalid(format!("it has no {member}")));
        }
        layers.push(ArchiveLayer { member, diff_id: None });
    }
    Ok(DockerArchive { layers, config: ArchiveConfig::Legacy(top_config) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::compress::{Compression, Encoder};

    fn add(builder: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, bytes).unwrap();
    }

    fn compressed(compression: Compression, bytes: &[u8]) -> Vec<u8> {
        let mut encoder = Encoder::new(compression, Vec::new());
        std::io::Write::write_all(&mut encoder, bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// The archive as `dir/name`.
    fn write(dir: &Path, name: &str, members: &[(&str, &[u8])], compression: Compression) -> std::path::PathBuf {
        let mut builder = tar::Builder::new(Vec::new());
        for (member, bytes) in members {
            add(&mut builder, member, bytes);
        }
        let bytes = compressed(compression, &builder.into_inner().unwrap());
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn copied(path: &Path, member: &str) -> Result<Vec<u8>, std::io::Error> {
        let mut out = Vec::new();
        archive::copy_member(path, member, &mut out).map(|()| out)
    }

    #[test]
    fn manifest_layout_plain_gzip_and_zstd() {
        let scratch = crate::test_dir::TestDir::new();
        let layer = b"pretend this is a layer tarball".to_vec();
        let diff_id = Digest::of(&layer);
        let config = serde_json::json!({"architecture": "arm64", "config": {"Env": ["A=1"]}, "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}}).to_string();
        let manifest = r#"[{"Config":"cfg.json","RepoTags":["base:latest"],"Layers":["./abc/layer.tar"]}]"#;
        let members: [(&str, &[u8]); 3] =
            [("abc/layer.tar", &layer), ("cfg.json", config.as_bytes()), ("manifest.json", manifest.as_bytes())];
        for compression in [Compression::None, Compression::default(), Compression::Zstd { level: 3 }] {
            let path = write(scratch.path(), &format!("manifest-{compression}"), &members, compression);
            let image = DockerArchive::open(&path).unwrap().unwrap();
            assert_eq!(image.layers[0].diff_id, Some(diff_id.clone()));
            assert_eq!(image.container_config().unwrap()["Env"][0], "A=1");
            let recipe = image.recipe(&path, "aarch64-linux").unwrap();
            assert_eq!(recipe.config.blob.as_deref(), Some(config.as_bytes()));
            assert_eq!(recipe.config.platform.variant.as_deref(), Some("v8"));
            assert_eq!(copied(&path, "./abc/layer.tar").unwrap(), layer);
            assert!(InvalidImage::from_io(&copied(&path, "missing").unwrap_err()).is_some());
        }
    }

    #[test]
    fn compressed_layer_members_are_served_decompressed() {
        let scratch = crate::test_dir::TestDir::new();
        // As `docker save` with containerd's image store writes layers: the registry's gzip blobs.
        let layer = b"an uncompressed layer".to_vec();
        let blob = compressed(Compression::default(), &layer);
        let config = serde_json::json!({"rootfs": {"diff_ids": [Digest::of(&layer).to_string()]}}).to_string();
        let manifest = r#"[{"Config":"blobs/sha256/c","Layers":["blobs/sha256/l"]}]"#;
        let members: [(&str, &[u8]); 3] =
            [("blobs/sha256/l", &blob), ("blobs/sha256/c", config.as_bytes()), ("manifest.json", manifest.as_bytes())];
        let path = write(scratch.path(), "compressed-member", &members, Compression::None);
        let image = DockerArchive::open(&path).unwrap().unwrap();
        assert_eq!(image.layers[0].diff_id, Some(Digest::of(&layer)));
        assert_eq!(copied(&path, "blobs/sha256/l").unwrap(), layer);
    }

    #[test]
    fn legacy_layout_follows_parents() {
        let scratch = crate::test_dir::TestDir::new();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let json_a = format!(r#"{{"id":"{a}"}}"#);
        let json_b = format!(r#"{{"id":"{b}","parent":"{a}","config":{{"Cmd":["x"]}},"architecture":"amd64"}}"#);
        let repositories = format!(r#"{{"img":{{"latest":"{b}"}}}}"#);
        let (layer_a, layer_b) = (format!("{a}/layer.tar"), format!("{b}/layer.tar"));
        let (json_a_name, json_b_name) = (format!("{a}/json"), format!("{b}/json"));
        let path = write(
            scratch.path(),
            "legacy",
            &[
                (&layer_a, b"A"),
                (&json_a_name, json_a.as_bytes()),
                (&layer_b, b"B"),
                (&json_b_name, json_b.as_bytes()),
                ("repositories", repositories.as_bytes()),
            ],
            Compression::None,
        );
        let image = DockerArchive::open(&path).unwrap().unwrap();
        let members: Vec<&str> = image.layers.iter().map(|l| l.member.as_str()).collect();
        assert_eq!(members, [layer_a.as_str(), layer_b.as_str()]);
        let recipe = image.recipe(&path, "x86_64-linux").unwrap();
        assert!(recipe.config.blob.is_none());
        assert_eq!(recipe.config.config["Cmd"][0], "x");
    }

    #[test]
    fn malformed_archives_are_errors_or_no_archive_never_panics() {
        let scratch = crate::test_dir::TestDir::new();
        let layer_id = Digest::of(b"layer").to_string();
        let config = format!(r#"{{"rootfs": {{"diff_ids": ["{layer_id}"]}}}}"#);
        let good_manifest = br#"[{"Config": "c.json", "Layers": ["l.tar"]}]"#;
        type Members<'a> = Vec<(&'a str, &'a [u8])>;
        let cases: Vec<(&str, Members)> = vec![
            ("manifest-object", vec![("manifest.json", b"{}")]),
            ("manifest-empty", vec![("manifest.json", b"[]")]),
            ("config-number", vec![("manifest.json", b"[{\"Config\": 7}]")]),
            ("layer-number", vec![("manifest.json", br#"[{"Config": "c.json", "Layers": [1]}]"#)]),
            ("no-config", vec![("manifest.json", good_manifest)]),
            ("no-diff-ids", vec![("manifest.json", good_manifest), ("c.json", b"{\"rootfs\": {}}")]),
            ("no-layer", vec![("manifest.json", good_manifest), ("c.json", config.as_bytes())]),
            ("manifest-not-utf8", vec![("manifest.json", b"[\xff\xfe"), ("c.json", config.as_bytes())]),
            (
                "bad-diff-id",
                vec![
                    ("manifest.json", good_manifest),
                    ("c.json", br#"{"rootfs": {"diff_ids": ["sha256:nothex"]}}"#),
                    ("l.tar", b"layer"),
                ],
            ),
        ];
        for (name, members) in cases {
            let path = write(scratch.path(), name, &members, Compression::None);
            assert!(!matches!(DockerArchive::open(&path), Ok(Some(_))), "{name} was read as an image");
        }
        let garbage = scratch.path().join("garbage");
        for bytes in [&b""[..], b"not a tarball at all", &[0xff; 1024], &[0x1f, 0x8b, 0, 0]] {
            std::fs::write(&garbage, bytes).unwrap();
            assert!(!matches!(DockerArchive::open(&garbage), Ok(Some(_))), "{bytes:?}");
        }
    }

    #[test]
    fn truncated_archives_and_plain_tarballs() {
        let scratch = crate::test_dir::TestDir::new();
        let manifest = br#"[{"Config":"c.json","Layers":[]}]"#;
        let whole =
            write(scratch.path(), "whole", &[("c.json", b"{}"), ("manifest.json", manifest)], Compression::None);
        let bytes = std::fs::read(&whole).unwrap();
        for cut in [bytes.len() - 1024, 600] {
            std::fs::write(&whole, &bytes[..cut]).unwrap();
            let err = DockerArchive::open(&whole).unwrap_err();
            assert!(err.0.contains("truncated"), "{cut}: {err}");
        }
        let other = write(scratch.path(), "other", &[("README", b"not an image")], Compression::default());
        assert!(DockerArchive::open(&other).unwrap().is_none());
        let gz = std::fs::read(&other).unwrap();
        std::fs::write(&other, &gz[..gz.len() - 4]).unwrap();
        assert!(DockerArchive::open(&other).is_err());
    }
}

//! What kind of image a build output is. A single output file is, in this order:
//! - a JSON document with `store_layers` or `customisation_layer`, or text
//!   that starts like one and names them (cut short): a streamLayeredImage
//!   conf (what `streamLayeredImageConf` outputs), to be reported if it does
//!   not parse, never served as a package;
//! - a JSON document with `version`, `image-config` and `layers`: a
//!   nix2container image;
//! - a tarball (plain, gzip or zstd; its first header's checksum holds)
//!   with `manifest.json` or `repositories`: a docker archive. A tarball
//!   that cannot be read whole is an error; a whole one with neither is a
//!   plain package;
//! - anything else, like any directory: a plain package.
//!
//! A directory of docker archives is an image directory: its images are
//! named after their files ([`directory_images`]) and pulled as `NAME/IMAGE`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::docker_archive::DockerArchive;
use super::{archive, conf, nix2container, InvalidImage};
use crate::reference::RepoName;

#[derive(Debug)]
pub enum OutputKind {
    Conf,
    DockerArchive(DockerArchive),
    /// The image JSON.
    Nix2Container(Vec<u8>),
    Package,
}

/// File names an image directory's archives have; the image is named by what comes before.
const ARCHIVE_SUFFIXES: [&str; 4] = [".tar", ".tar.gz", ".tgz", ".tar.zst"];

/// Largest JSON file looked into (nix2container JSON lists every store path of the image).
const JSON_LIMIT: u64 = 1 << 30;

pub fn classify(path: &Path) -> Result<OutputKind, InvalidImage> {
    let unreadable = |e: std::io::Error| InvalidImage(format!("the output cannot be read: {e}"));
    let meta = fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Ok(OutputKind::Package);
    }
    let mut head = Vec::with_capacity(64);
    fs::File::open(path).and_then(|f| f.take(64).read_to_end(&mut head)).map_err(unreadable)?;
    if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') && meta.len() <= JSON_LIMIT {
        let bytes = fs::read(path).map_err(unreadable)?;
        if conf::looks_like_conf(&bytes) {
            return Ok(OutputKind::Conf);
        }
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            if nix2container::is_image_json(&value) {
                return Ok(OutputKind::Nix2Container(bytes));
            }
        }
        return Ok(OutputKind::Package);
    }
    if archive::is_tarball(path)? {
        if let Some(image) = DockerArchive::open(path)? {
            return Ok(OutputKind::DockerArchive(image));
        }
    }
    Ok(OutputKind::Package)
}

/// The docker archives directly in directory `dir`, by image name: the
/// file name without `.tar`, `.tar.gz`, `.tgz` or `.tar.zst`, lowercased,
/// when that is a valid name component (symlinks to files count; the first
/// file name in byte order wins a name). Empty for anything else.
pub fn directory_images(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut images = BTreeMap::new();
    let Ok(entries) = fs::read_dir(dir) else { return images };
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .filter(|(_, path)| path.is_file())
        .collect();
    files.sort();
    for (file_name, path) in files {
        let lower = file_name.to_ascii_lowercase();
        let Some(stem) = ARCHIVE_SUFFIXES.iter().find_map(|suffix| lower.strip_suffix(suffix)) else { continue };
        if !stem.contains('/') && RepoName::parse(stem).is_some() {
            images.entry(stem.to_string()).or_insert(path);
        }
    }
    images
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_directories_name_archives_by_file_name() {
        let scratch = crate::test_dir::TestDir::new();
        let dir = scratch.path().join("dir");
        fs::create_dir_all(dir.join("sub.tar")).unwrap();
        for file in ["Web.tar.gz", "web.tar", "worker.tar.zst", "compose.yaml", "bad_-name.tar", "api.tgz"] {
            fs::write(dir.join(file), "x").unwrap();
        }
        let images = directory_images(&dir);
        let names: Vec<&str> = images.keys().map(String::as_str).collect();
        assert_eq!(names, ["api", "web", "worker"]);
        assert_eq!(images["web"], dir.join("Web.tar.gz"));
        assert!(directory_images(&dir.join("compose.yaml")).is_empty());
    }

    #[test]
    fn json_files_by_their_keys() {
        let scratch = crate::test_dir::TestDir::new();
        let dir = scratch.path().join("dir");
        fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            fs::write(dir.join(name), text).unwrap();
            classify(&dir.join(name)).unwrap()
        };
        assert!(matches!(file("conf", r#" {"store_layers": [], "customisation_layer": "/x"}"#), OutputKind::Conf));
        // A conf that does not parse is still a conf: an error, not a package.
        assert!(matches!(file("cut", r#"{"architecture": "amd64", "store_layers": [["/nix"#), OutputKind::Conf));
        let n2c = r#"{"version": 1, "image-config": {}, "layers": []}"#;
        assert!(matches!(file("n2c", n2c), OutputKind::Nix2Container(_)));
        assert!(matches!(file("other", r#"{"a": 1}"#), OutputKind::Package));
        assert!(matches!(file("text", "hello"), OutputKind::Package));
        assert!(matches!(classify(&dir).unwrap(), OutputKind::Package));
    }
}

//! A `from_image` base: a docker-archive tarball (`docker save`,
//! `dockerTools.buildImage`) whose layers go below the image's own, read as
//! `stream_layered_image.py` reads it: `manifest.json`'s first image, its
//! config's `rootfs.diff_ids`, and each layer member copied as it is.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// One layer of the base archive.
#[derive(Debug, Clone)]
pub struct BaseLayer {
    /// The member name inside the archive (`manifest.json`'s `Layers`).
    pub member: String,
    pub size: u64,
    /// From the archive config's `rootfs.diff_ids`.
    pub diff_id: Digest,
}

#[derive(Debug)]
pub struct BaseImage {
    pub archive: PathBuf,
    pub layers: Vec<BaseLayer>,
    /// The archive's image config JSON (the whole document).
    pub image_config: serde_json::Value,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Calls `visit` on every member until it returns `Some`.
fn find_member<T>(
    archive: &Path,
    mut visit: impl FnMut(&str, &mut dyn Read, u64) -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    let mut tar = tar::Archive::new(File::open(archive)?);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().trim_start_matches("./").to_string();
        let size = entry.size();
        if let Some(found) = visit(&name, &mut entry, size)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn read_json(archive: &Path, member: &str) -> io::Result<serde_json::Value> {
    let bytes = find_member(archive, |name, entry, _| {
        if name != member {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    })?
    .ok_or_else(|| invalid(format!("the base image has no {member}")))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("{member} of the base image: {e}")))
}

impl BaseImage {
    pub fn open(archive: &Path) -> io::Result<BaseImage> {
        let manifest = read_json(archive, "manifest.json")?;
        let first = &manifest[0];
        let config_member = first["Config"].as_str().ok_or_else(|| invalid("manifest.json names no Config"))?;
        let members: Vec<String> = first["Layers"]
            .as_array()
            .ok_or_else(|| invalid("manifest.json names no Layers"))?
            .iter()
            .map(|l| l.as_str().map(String::from).ok_or_else(|| invalid("a layer name is not a string")))
            .collect::<io::Result<_>>()?;
        let image_config = read_json(archive, config_member)?;
        let diff_ids = image_config["rootfs"]["diff_ids"].as_array().cloned().unwrap_or_default();
        if diff_ids.len() != members.len() {
            return Err(invalid("the base image's config and manifest disagree on its layers"));
        }
        let mut sizes = vec![None; members.len()];
        find_member(archive, |name, _, size| {
            for (i, member) in members.iter().enumerate() {
                if member.trim_start_matches("./") == name {
                    sizes[i] = Some(size);
                }
            }
            Ok(None::<()>)
        })?;
        let layers = members
            .into_iter()
            .zip(diff_ids)
            .zip(sizes)
            .map(|((member, diff_id), size)| {
                let diff_id = diff_id
                    .as_str()
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| invalid("a diff_id of the base image is not a sha256 digest"))?;
                let size = size.ok_or_else(|| invalid(format!("the base image has no layer {member}")))?;
                Ok(BaseLayer { member, size, diff_id })
            })
            .collect::<io::Result<_>>()?;
        Ok(BaseImage { archive: archive.to_path_buf(), layers, image_config })
    }
}

/// Streams one member of the archive (a layer tarball) to `out`.
pub fn copy_member(archive: &Path, member: &str, out: &mut dyn Write) -> io::Result<u64> {
    let wanted = member.trim_start_matches("./");
    find_member(archive, |name, entry, _| if name == wanted { io::copy(entry, out).map(Some) } else { Ok(None) })?
        .ok_or_else(|| invalid(format!("the base image has no layer {member}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(builder: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, bytes).unwrap();
    }

    #[test]
    fn reads_a_docker_archive() {
        let layer = b"pretend this is a layer tarball".to_vec();
        let diff_id = Digest::of(&layer);
        let config = serde_json::json!({"config": {"Env": ["A=1"]}, "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}});
        let manifest =
            serde_json::json!([{"Config": "cfg.json", "RepoTags": ["base:latest"], "Layers": ["abc/layer.tar"]}]);
        let mut builder = tar::Builder::new(Vec::new());
        add(&mut builder, "abc/layer.tar", &layer);
        add(&mut builder, "cfg.json", config.to_string().as_bytes());
        add(&mut builder, "manifest.json", manifest.to_string().as_bytes());
        let path = std::env::temp_dir().join(format!("flakeforge-base-{}.tar", std::process::id()));
        std::fs::write(&path, builder.into_inner().unwrap()).unwrap();

        let base = BaseImage::open(&path).unwrap();
        assert_eq!(base.layers.len(), 1);
        assert_eq!(base.layers[0].size, layer.len() as u64);
        assert_eq!(base.layers[0].diff_id, diff_id);
        assert_eq!(base.image_config["config"]["Env"][0], "A=1");
        let mut copied = Vec::new();
        assert_eq!(copy_member(&path, "abc/layer.tar", &mut copied).unwrap(), layer.len() as u64);
        assert_eq!(copied, layer);
        assert!(copy_member(&path, "missing", &mut Vec::new()).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}

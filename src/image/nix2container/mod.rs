//! nix2container images: the JSON `nix2container.buildImage` outputs (its
//! `types.Image`, version 1), which its skopeo transport turns into an
//! image. Each layer is either store paths with options, archived here as
//! nix2container archives them ([`layer`]), or a ready tarball
//! (`layer-path`: a `fromImage` base's layers, non-reproducible layers),
//! decompressed if need be. Either way its uncompressed digest must be the
//! `diff_ids` the JSON records.
//!
//! The config blob is the one nix2container's `GetConfigBlob` writes (Go's
//! `json.Marshal` of an image-spec `v1.Image`), put together from the JSON's
//! own Go-encoded pieces, so the image ID equals the one
//! `nix run .#image.copyToDockerDaemon` loads.

pub mod layer;

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::layer::LayerSource;
use super::manifest::{ImageConfig, Platform};
use super::{ImageRecipe, InvalidImage};
use crate::digest::Digest;
pub use layer::LayerPath;

/// The image JSON, with the pieces that go into the config kept as Go wrote them.
#[derive(Deserialize)]
struct ImageJson<'a> {
    version: u32,
    #[serde(rename = "image-config", borrow, default)]
    image_config: Option<&'a RawValue>,
    #[serde(default)]
    layers: Vec<LayerJson<'a>>,
    #[serde(borrow, default)]
    arch: Option<&'a RawValue>,
    #[serde(borrow, default)]
    created: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct LayerJson<'a> {
    #[serde(borrow)]
    diff_ids: &'a RawValue,
    #[serde(default)]
    paths: Option<Vec<LayerPath>>,
    #[serde(rename = "layer-path", default)]
    layer_path: Option<String>,
    #[serde(rename = "History", borrow, default)]
    history: Option<&'a RawValue>,
}

/// Whether a JSON document is a nix2container image (rather than another JSON file).
pub fn is_image_json(value: &serde_json::Value) -> bool {
    ["version", "image-config", "layers"].iter().all(|key| value.get(key).is_some())
}

/// The image a nix2container JSON describes, for the Nix system it was built for.
pub fn recipe(json: &[u8], system: &str) -> Result<ImageRecipe, InvalidImage> {
    let invalid = |what: String| InvalidImage(format!("not a usable nix2container image: {what}"));
    let image: ImageJson = serde_json::from_slice(json).map_err(|e| invalid(e.to_string()))?;
    if image.version != 1 {
        return Err(invalid(format!("version {} (flakeforge reads version 1)", image.version)));
    }
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, layer) in image.layers.iter().enumerate() {
        let diff_id: Digest = serde_json::from_str::<String>(layer.diff_ids.get())
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| invalid(format!("layer {i} has no sha256 diff_ids")))?;
        // As nix2container's `LayerGetBlob`: a written tarball first, else the paths.
        layers.push(match (&layer.layer_path, &layer.paths) {
            (Some(path), _) if !path.is_empty() => {
                LayerSource::TarFile { path: PathBuf::from(path), diff_id: Some(diff_id.clone()) }
            }
            (_, Some(paths)) if !paths.is_empty() => {
                LayerSource::Nix2Container { paths: paths.clone(), diff_id: diff_id.clone() }
            }
            _ => return Err(invalid(format!("layer {i} has neither paths nor a layer-path"))),
        });
        diff_ids.push(diff_id);
    }

    let arch: String = match image.arch {
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| invalid("arch is not a string".into()))?,
        None => String::new(),
    };
    let created = image.created.filter(|raw| raw.get() != "null");
    let created_text: String = created.and_then(|raw| serde_json::from_str(raw.get()).ok()).unwrap_or_default();
    let image_config = image.image_config.map_or("{}".to_string(), |raw| compact(raw.get()));
    let config = serde_json::from_str(&image_config).map_err(|e| invalid(e.to_string()))?;
    // nix2container writes no variant; the served system adds it (arm64 → v8).
    let platform = Platform::declared(Some(&arch), None, None, system)
        .ok_or_else(|| invalid(format!("it names no arch and {system} has no OCI platform")))?;
    let blob = config_blob(&image, &image_config);
    let config = ImageConfig { platform, created: created_text, config, blob: Some(blob) };
    Ok(ImageRecipe { layers, config })
}

/// `json.Marshal(v1.Image{...})` as nix2container's `getV1Image` fills it:
/// created (if any), author (never), architecture, os, config, rootfs, history.
fn config_blob(image: &ImageJson, image_config: &str) -> Vec<u8> {
    let mut out = String::from("{");
    if let Some(created) = image.created.filter(|raw| raw.get() != "null") {
        out += &format!("\"created\":{},", compact(created.get()));
    }
    let arch = image.arch.map_or("\"\"".to_string(), |raw| compact(raw.get()));
    out += &format!("\"architecture\":{arch},\"os\":\"linux\",\"config\":{image_config},");
    if image.layers.is_empty() {
        out += "\"rootfs\":{\"type\":\"\",\"diff_ids\":null}";
    } else {
        let diff_ids: Vec<String> = image.layers.iter().map(|l| compact(l.diff_ids.get())).collect();
        let history: Vec<String> =
            image.layers.iter().map(|l| l.history.map_or("{}".to_string(), |h| compact(h.get()))).collect();
        out += &format!(
            "\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{}]}},\"history\":[{}]",
            diff_ids.join(","),
            history.join(",")
        );
    }
    out += "}";
    out.into_bytes()
}

/// Go's `json.Compact`: the whitespace between tokens removed, strings untouched.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    fn image_json(layers: &str) -> String {
        format!(
            "{{\n\t\"version\": 1,\n\t\"image-config\": {{\n\t\t\"Env\": [\n\t\t\t\"A=b c\"\n\t\t],\n\t\t\"Cmd\": [\"/bin/sh\"]\n\t}},\n\t\"layers\": {layers},\n\t\"arch\": \"amd64\",\n\t\"created\": \"0001-01-01T00:00:00Z\"\n}}"
        )
    }

    #[test]
    fn config_blob_is_go_marshal_of_the_image() {
        let layer = format!(
            "[{{\"digest\": \"{DIFF}\", \"size\": 10, \"diff_ids\": \"{DIFF}\", \"paths\": [{{\"path\": \"/nix/store/a\", \"options\": {{\"rewrite\": {{\"regex\": \"^/nix/store/a\", \"repl\": \"\"}}, \"perms\": [{{\"regex\": \".*\", \"mode\": \"0644\", \"uid\": 1000, \"gid\": 100, \"uname\": \"u\", \"gname\": \"g\"}}]}}}}], \"mediatype\": \"application/vnd.oci.image.layer.v1.tar\", \"History\": {{\"created_by\": \"nix2container\"}}}}]"
        );
        let recipe = recipe(image_json(&layer).as_bytes(), "x86_64-linux").unwrap();
        let blob = String::from_utf8(recipe.config.blob.unwrap()).unwrap();
        assert_eq!(
            blob,
            format!(
                "{{\"created\":\"0001-01-01T00:00:00Z\",\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{\"Env\":[\"A=b c\"],\"Cmd\":[\"/bin/sh\"]}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{DIFF}\"]}},\"history\":[{{\"created_by\":\"nix2container\"}}]}}"
            )
        );
        assert_eq!(recipe.config.config["Cmd"][0], "/bin/sh");
        let LayerSource::Nix2Container { paths, diff_id } = &recipe.layers[0] else { panic!("{:?}", recipe.layers) };
        assert_eq!(diff_id.to_string(), DIFF);
        let perm = &paths[0].options.as_ref().unwrap().perms[0];
        assert_eq!((perm.uid, perm.mode.as_str(), perm.gname.as_str()), (1000, "0644", "g"));
    }

    #[test]
    fn written_tarballs_and_bad_layers() {
        let layer = format!("[{{\"diff_ids\": \"{DIFF}\", \"layer-path\": \"/nix/store/b/layer.tar\"}}]");
        let recipe = recipe(image_json(&layer).as_bytes(), "aarch64-linux").unwrap();
        assert!(matches!(&recipe.layers[0], LayerSource::TarFile { diff_id: Some(_), .. }));
        assert_eq!(recipe.config.platform.architecture, "amd64");
        let blob = String::from_utf8(recipe.config.blob.unwrap()).unwrap();
        assert!(blob.ends_with(&format!("\"diff_ids\":[\"{DIFF}\"]}},\"history\":[{{}}]}}")), "{blob}");

        for bad in [format!("[{{\"diff_ids\": \"{DIFF}\"}}]"), "[{\"diff_ids\": \"md5:x\", \"paths\": []}]".into()] {
            assert!(super::recipe(image_json(&bad).as_bytes(), "x86_64-linux").is_err(), "{bad}");
        }
        assert!(super::recipe(b"{\"version\": 2}", "x86_64-linux").is_err());
    }

    #[test]
    fn compact_keeps_strings() {
        assert_eq!(compact("{ \"a b\" :\n [ \"c\\\" d\" ] }"), "{\"a b\":[\"c\\\" d\"]}");
    }
}

//! The JSON conf of nixpkgs' `dockerTools.streamLayeredImage` (its `conf`
//! attribute), read with the meaning `stream_layered_image.py` gives it.

use super::Ownership;

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("not a streamLayeredImage conf: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid conf field {field}: {reason}")]
    Field { field: &'static str, reason: String },
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct LayeredImageConf {
    pub architecture: String,
    #[serde(default)]
    pub config: serde_json::Value,
    pub created: String,
    pub mtime: String,
    pub uid: serde_json::Value,
    pub gid: serde_json::Value,
    pub uname: String,
    pub gname: String,
    #[serde(default)]
    pub store_dir: Option<String>,
    pub store_layers: Vec<Vec<String>>,
    pub customisation_layer: String,
    #[serde(default)]
    pub from_image: Option<String>,
    #[serde(default)]
    pub repo_tag: Option<String>,
}

impl LayeredImageConf {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Owner and mtime of store-layer entries (`mtime`, `uid`, `gid`, `uname`, `gname`).
    pub fn ownership(&self) -> Result<Ownership, ConfError> {
        todo!()
    }

    /// `created` as the script writes it into the image config (`datetime.isoformat`).
    pub fn created_iso(&self) -> Result<String, ConfError> {
        todo!()
    }

    /// The image's `config`, with the base image's `Env` merged under it as the script does.
    pub fn merged_config(&self, base_config: Option<&serde_json::Value>) -> serde_json::Value {
        let _ = base_config;
        todo!()
    }
}

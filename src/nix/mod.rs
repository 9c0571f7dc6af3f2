//! The Nix driver: `nix` runs as a subprocess (never through a shell), each
//! value its own argv element, with a timeout that kills its process group.

pub mod attr;
pub mod command;
pub mod flakeref;
pub mod json;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// One store path of a closure, as `nix path-info --json` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: PathBuf,
    pub nar_size: u64,
    pub references: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum NixError {
    #[error("could not run nix: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nix timed out after {secs} s")]
    Timeout { secs: u64, log_tail: String },
    #[error("nix failed")]
    Failed { log_tail: String },
    #[error("unexpected output from nix: {0}")]
    Output(String),
    #[error("the flake has no attribute {name} for {system}")]
    AttrNotFound { name: String, system: String },
    #[error("the flake {flake} has no git refs, so it has no tags but latest")]
    NoRefs { flake: String },
}

impl NixError {
    /// The end of Nix's log, for the client (empty where there is none).
    pub fn log_tail(&self) -> &str {
        match self {
            NixError::Timeout { log_tail, .. } | NixError::Failed { log_tail } => log_tail,
            _ => "",
        }
    }
}

/// How to run `nix`.
#[derive(Debug, Clone)]
pub struct Nix {
    pub program: PathBuf,
    pub timeout: Duration,
}

impl Nix {
    /// `nix build --json --out-link OUT_LINK INSTALLABLE`: the output paths, `out` first.
    pub fn build(&self, installable: &str, out_link: &Path) -> Result<Vec<PathBuf>, NixError> {
        let _ = (installable, out_link);
        todo!()
    }

    /// `nix eval --json INSTALLABLE --apply APPLY`.
    pub fn eval_json(&self, installable: &str, apply: &str) -> Result<serde_json::Value, NixError> {
        let _ = (installable, apply);
        todo!()
    }

    /// `nix path-info --recursive --json PATHS...`: the closure, valid paths only.
    pub fn closure(&self, paths: &[PathBuf]) -> Result<Vec<PathInfo>, NixError> {
        let _ = paths;
        todo!()
    }
}

//! The settings `flakeforge serve` runs with, parsed and checked, and the
//! parsers for flag values (`10G`-style sizes).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::http::ServerLimits;
use crate::image::compress::Compression;
use crate::nix::attr::LookupOptions;
use crate::nix::scheduler::SchedulerOptions;
use crate::service::{AttestOptions, BuildPolicy, PrebuildOptions};
use crate::storage::StorageOptions;

#[derive(Debug, Clone)]
pub struct Config {
    /// The flake reference served; local paths made absolute.
    pub flake: String,
    pub listen: Vec<SocketAddr>,
    pub state_dir: PathBuf,
    pub tls: bool,
    pub build_timeout: Duration,
    pub cache_size: u64,
    pub compression: Compression,
    pub nix: PathBuf,
    pub max_layers: usize,
    pub tag_ttl: Duration,
    /// The Nix systems whose packages are served (`x86_64-linux`, ...); never empty.
    pub systems: Vec<String>,
    pub limits: ServerLimits,
    /// How Nix processes are shared out (`--max-builds`, `--max-evals`, `--build-rate`).
    pub scheduler: SchedulerOptions,
    /// Where image names are looked up (`--no-legacy-packages`).
    pub lookup: LookupOptions,
    /// How builds meet clients (`--answer-within`, `--negative-ttl`, `--no-stale`, `--max-compose`).
    pub policy: BuildPolicy,
    /// What is built ahead of pulls, and the watch (`--prebuild`, `--prebuild-all`, `--watch-interval`).
    pub prebuild: PrebuildOptions,
    /// What is attached to every image built (`--no-sbom`).
    pub attest: AttestOptions,
    /// Where blobs and records are kept (`--storage`, `--s3-*`).
    pub storage: StorageOptions,
}

/// Parses `1024`, `512K`, `10M`, `10G`, `1T` (binary units; a trailing `B`/`iB` is allowed).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let number_part = upper.trim_end_matches("IB").trim_end_matches('B');
    let (digits, shift) = match number_part.chars().last() {
        Some('K') => (&number_part[..number_part.len() - 1], 10),
        Some('M') => (&number_part[..number_part.len() - 1], 20),
        Some('G') => (&number_part[..number_part.len() - 1], 30),
        Some('T') => (&number_part[..number_part.len() - 1], 40),
        _ => (number_part, 0),
    };
    let invalid = || format!("invalid size {text:?} (expected e.g. 500M or 10G)");
    let value: u64 = digits.trim().parse().map_err(|_| invalid())?;
    value.checked_mul(1u64 << shift).ok_or_else(invalid)
}

/// `$STATE_DIRECTORY` (systemd), else `$XDG_STATE_HOME/flakeforge`, else `~/.local/state/flakeforge`.
pub fn default_state_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("STATE_DIRECTORY") {
        // systemd passes several directories separated by ':' when several are configured.
        let first = dir.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        return Some(PathBuf::from(first));
    }
    var("XDG_STATE_HOME")
        .or_else(|| var("HOME").map(|home| home.join(".local").join("state")))
        .map(|dir| dir.join("flakeforge"))
}

/// The Nix system of this machine, as Nix names it.
pub fn host_system() -> String {
    let cpu = match std::env::consts::ARCH {
        "x86" => "i686",
        "arm" => "armv7l",
        "powerpc64" if cfg!(target_endian = "little") => "powerpc64le",
        other => other,
    };
    format!("{cpu}-{}", std::env::consts::OS)
}

/// A flake reference as given, with a local path made absolute (tags turn
/// it into `git+file://` references, which need absolute paths).
pub fn normalize_flake(flake: &str) -> Result<String, String> {
    let is_path = !flake.contains(':') || flake.starts_with("path:");
    if !is_path {
        return Ok(flake.to_string());
    }
    let path = flake.strip_prefix("path:").unwrap_or(flake);
    let absolute = std::fs::canonicalize(path).map_err(|err| format!("flake {flake:?}: {err}"))?;
    if !absolute.join("flake.nix").is_file() {
        return Err(format!("flake {flake:?}: no flake.nix in {}", absolute.display()));
    }
    let absolute = absolute.to_str().ok_or_else(|| format!("flake {flake:?}: path is not UTF-8"))?;
    Ok(if flake.starts_with("path:") { format!("path:{absolute}") } else { absolute.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("10g"), Ok(10 << 30));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("3MiB"), Ok(3 << 20));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("10X").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn system() {
        assert!(host_system().ends_with("-linux"));
    }
}

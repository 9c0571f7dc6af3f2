//! The Nix driver: `nix` runs as a subprocess (never through a shell), each
//! value its own argv element, with a timeout that kills its process group,
//! every process through one [`scheduler::Scheduler`].

pub mod attr;
pub mod command;
pub mod derivation;
pub mod flake;
pub mod flakeref;
pub mod json;
pub mod log;
pub mod scheduler;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use command::Invocation;
pub use flake::{LockedFlake, LockedInput};
use scheduler::{Scheduler, SchedulerOptions, Work};

/// One store path of a closure, as `nix path-info --json` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathInfo {
    pub path: PathBuf,
    pub nar_size: u64,
    /// The hash of its NAR serialisation, as Nix prints it (`sha256-<base64>`); empty if Nix printed none.
    pub nar_hash: String,
    pub references: Vec<PathBuf>,
    /// The derivation that built it, if Nix knows one (a source added with
    /// `builtins.path` has none); the file itself may be gone.
    pub deriver: Option<PathBuf>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum NixError {
    #[error("could not run nix: {0}")]
    Spawn(#[source] Arc<std::io::Error>),
    /// `error` is Nix's own error report (`error: …`), if it made one.
    #[error("nix timed out after {secs} s")]
    Timeout { secs: u64, log_tail: String, error: Option<String> },
    #[error("nix failed")]
    Failed { log_tail: String, error: Option<String> },
    #[error("unexpected output from nix: {0}")]
    Output(String),
    #[error("the flake has no attribute {name} for {system}")]
    AttrNotFound { name: String, system: String },
    #[error("the flake {flake} has no git refs, so it has no tags but latest")]
    NoRefs { flake: String },
    /// The scheduler's queue is full, or a request's deadline passed in it.
    #[error("too much Nix work is waiting")]
    Busy,
    /// The client started more Nix work than `--build-rate` allows.
    #[error("too many requests that run Nix from this address")]
    RateLimited { retry_after: Duration },
}

impl NixError {
    /// The end of Nix's log (empty where there is none).
    pub fn log_tail(&self) -> &str {
        match self {
            NixError::Timeout { log_tail, .. } | NixError::Failed { log_tail, .. } => log_tail,
            _ => "",
        }
    }

    /// What went wrong in a form a client may see: Nix's error line without
    /// paths or URLs ([`log::client_reason`]), never a builder's output.
    pub fn client_reason(&self) -> String {
        match self {
            NixError::Failed { error: Some(error), .. } => log::client_reason(error),
            NixError::Timeout { error: Some(error), .. } => format!("{self}: {}", log::client_reason(error)),
            _ => self.to_string(),
        }
    }
}

/// How to run `nix`, and for whom: clones share the scheduler and the
/// attribute cache; [`Nix::for_work`] makes one that runs for a request or a job.
#[derive(Clone)]
pub struct Nix {
    pub program: PathBuf,
    pub timeout: Duration,
    scheduler: Arc<Scheduler>,
    work: Arc<Work>,
    attrs: Arc<attr::Cache>,
}

impl std::fmt::Debug for Nix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nix").field("program", &self.program).field("timeout", &self.timeout).finish()
    }
}

impl Nix {
    /// Runs `program`, killing a run after `timeout`, with a scheduler of its own.
    pub fn new(program: impl Into<PathBuf>, timeout: Duration, options: &SchedulerOptions) -> Nix {
        Nix {
            program: program.into(),
            timeout,
            scheduler: Arc::new(Scheduler::new(options)),
            work: Arc::new(Work::background()),
            attrs: Arc::new(attr::Cache::new(attr::LookupOptions::default())),
        }
    }

    /// The same Nix, looking image names up as `options` say (with an attribute cache of its own).
    pub fn with_lookup(self, options: attr::LookupOptions) -> Nix {
        Nix { attrs: Arc::new(attr::Cache::new(options)), ..self }
    }

    /// The same Nix, running for `work`.
    pub fn for_work(&self, work: Arc<Work>) -> Nix {
        Nix { work, ..self.clone() }
    }

    pub fn work(&self) -> &Arc<Work> {
        &self.work
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// `nix flake metadata --json --refresh FLAKE`: the revision `flake`
    /// stands for now. Without `--refresh` Nix answers a remote or bare git
    /// repository (and `github:`) from its cache for `tarball-ttl` (an hour).
    pub fn lock(&self, flake: &str) -> Result<LockedFlake, NixError> {
        let stdout = Invocation::new(["flake", "metadata", "--json", "--refresh", "--"], ::log::Level::Debug)
            .arg(flake)
            .run(self)?;
        flake::parse_metadata(&stdout, flake)
    }

    /// `nix build --json --out-link OUT_LINK INSTALLABLE`: the output paths, `out` first.
    ///
    /// Each output built gets a symlink that is a GC root: `OUT_LINK` for
    /// `out`, `OUT_LINK-<name>` for the others. Nix 2.8 builds only the
    /// default output (the first listed), so for a derivation whose first
    /// output is not `out` there is no `OUT_LINK` itself.
    ///
    /// As `nix build` always does, an installable's attribute path may first
    /// be looked up under Nix's default prefixes (`packages.<this system>.`,
    /// then `legacyPackages.<this system>.`).
    pub fn build(&self, installable: &str, out_link: &Path) -> Result<Vec<PathBuf>, NixError> {
        let stdout = Invocation::new(["build", "--json", "--out-link"], ::log::Level::Info)
            .arg(out_link)
            .args(["--", installable])
            .run(self)?;
        json::build_outputs(&stdout)
    }

    /// [`Nix::build`] with `--no-link`: no GC root is written.
    pub fn build_unrooted(&self, installable: &str) -> Result<Vec<PathBuf>, NixError> {
        let stdout =
            Invocation::new(["build", "--json", "--no-link", "--", installable], ::log::Level::Info).run(self)?;
        json::build_outputs(&stdout)
    }

    /// `nix eval --json INSTALLABLE --apply APPLY`.
    pub fn eval_json(&self, installable: &str, apply: &str) -> Result<serde_json::Value, NixError> {
        self.eval(&[], installable, apply)
    }

    /// [`Nix::eval_json`] of `FLAKE#ATTR_PATH` with `ATTR_PATH` taken as it
    /// is, from the flake's outputs: no default prefixes are tried first.
    /// Nix 2.8 has no syntax for that, so the prefixes are pointed at a
    /// system no flake has; `--system` changes nothing else for an eval.
    /// `ATTR_PATH` `""` is the outputs themselves: it parses to no attribute.
    pub(crate) fn eval_json_exact(
        &self,
        flake: &str,
        attr_path: &str,
        apply: &str,
    ) -> Result<serde_json::Value, NixError> {
        let installable = format!("{flake}#{attr_path}");
        self.eval(&["--system", "flakeforge-no-such-system"], &installable, apply)
    }

    fn eval(&self, options: &[&str], installable: &str, apply: &str) -> Result<serde_json::Value, NixError> {
        let stdout = Invocation::new(["eval", "--json"], ::log::Level::Debug)
            .args(options)
            .args(["--apply", apply, "--", installable])
            .run(self)?;
        serde_json::from_slice(&stdout).map_err(|error| NixError::Output(format!("nix eval: {error}")))
    }

    /// `nix path-info --recursive --json PATHS...`: the closure, valid paths
    /// only, sorted by path.
    pub fn closure(&self, paths: &[PathBuf]) -> Result<Vec<PathInfo>, NixError> {
        // With no paths nix would take the flake in the working directory.
        let Some(first) = paths.first() else { return Ok(Vec::new()) };
        let stdout =
            Invocation::new(["path-info", "--recursive", "--json", "--"], ::log::Level::Debug).args(paths).run(self)?;
        let store_dir = first.parent().unwrap_or(Path::new("/"));
        json::path_infos(&stdout, store_dir)
    }
}

//! The command line: `flakeforge serve` and its flags, turned into a
//! [`Config`] and a running server; `flakeforge ca` prints the local CA;
//! `flakeforge systemd-unit` prints the unit for Debian-family hosts.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;

use crate::app::App;
use crate::auth::{AuthOptions, Guard};
use crate::config::{self, Config};
use crate::http::{self, ServerLimits};
use crate::image::compress::{Compression, Pool};
use crate::nix::attr::LookupOptions;
use crate::nix::scheduler::SchedulerOptions;
use crate::reference::{RepoName, Tag};
use crate::registry::Registry;
use crate::service::{AttestOptions, BuildPolicy, PrebuildOptions, Service};
use crate::storage::{self, S3Options, StorageOptions};
use crate::systemd_unit::{self, UnitOptions};
use crate::tls::{self, CertFiles, TlsOptions};
use crate::web::metrics::MetricsOnly;
use crate::web::{Web, WebOptions};

/// flakeforge: a container registry that builds images from a Nix flake on demand.
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
// Parsed once at startup: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    Serve(ServeArgs),
    Ca(CaArgs),
    SystemdUnit(SystemdUnitArgs),
}

/// Print flakeforge.service for hosts with Debian's Nix (nix-bin, nix-setup-systemd): Debian, Ubuntu, Raspberry Pi OS.
#[derive(FromArgs)]
#[argh(subcommand, name = "systemd-unit")]
struct SystemdUnitArgs {
    /// the installed flakeforge program (default: /usr/local/bin/flakeforge)
    #[argh(option, default = "String::from(systemd_unit::DEFAULT_BINARY)")]
    binary: String,
    /// for a port below 1024: grant CAP_NET_BIND_SERVICE (and no user namespace)
    #[argh(switch)]
    privileged_port: bool,
}

/// Print the local certificate authority's certificate (PEM) for clients to trust; creates it if missing.
#[derive(FromArgs)]
#[argh(subcommand, name = "ca")]
struct CaArgs {
    /// the state directory of `flakeforge serve` (default: $STATE_DIRECTORY, else $XDG_STATE_HOME/flakeforge)
    #[argh(option)]
    state_dir: Option<PathBuf>,
}

/// Serve the flake's packages as container images (OCI Distribution API).
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
struct ServeArgs {
    /// flake reference to serve (default: ".")
    #[argh(option, default = "String::from(\".\")")]
    flake: String,
    /// address to listen on, repeatable (default: 0.0.0.0:5000)
    #[argh(option)]
    listen: Vec<String>,
    /// where blobs, manifests and GC roots live (default: $STATE_DIRECTORY, else $XDG_STATE_HOME/flakeforge)
    #[argh(option)]
    state_dir: Option<PathBuf>,
    /// serve plain HTTP instead of HTTPS
    #[argh(switch)]
    no_tls: bool,
    /// a DNS name or IP address clients reach the registry by, repeatable; added to the local CA's certificate
    #[argh(option)]
    hostname: Vec<String>,
    /// a PEM certificate chain to serve instead of the local CA's (with --tls-key; re-read when it changes)
    #[argh(option)]
    tls_cert: Option<PathBuf>,
    /// the PEM private key of --tls-cert (RSA, ECDSA or Ed25519)
    #[argh(option)]
    tls_key: Option<PathBuf>,
    /// make a new local CA when tls/ca.crt is there but tls/ca.key is lost (clients must then trust the new CA); without it that refuses to start
    #[argh(switch)]
    new_ca: bool,
    /// an Apache htpasswd file of bcrypt entries (htpasswd -B): its users log in with HTTP Basic; re-read when it changes
    #[argh(option)]
    htpasswd: Option<PathBuf>,
    /// who may pull and build which images: a TOML file, or JSON if it ends in .json (see README); re-read when it changes
    #[argh(option)]
    policy: Option<PathBuf>,
    /// allow --htpasswd with --no-tls, where passwords cross the network readable (behind a proxy that does TLS)
    #[argh(switch)]
    allow_insecure_auth: bool,
    /// look image names up in packages.<system> only, not in legacyPackages.<system>
    #[argh(switch)]
    no_legacy_packages: bool,
    /// seconds a nix invocation may take before its process group is killed (default: 1800)
    #[argh(option, default = "1800")]
    build_timeout: u64,
    /// nix builds that may run at once (default: 2)
    #[argh(option, default = "2")]
    max_builds: usize,
    /// other nix processes (evaluations, path-info, flake metadata) that may run at once, apart from builds (default: 4)
    #[argh(option, default = "4")]
    max_evals: usize,
    /// requests per minute from one client address that may start Nix work; 0 for no limit (default: 30)
    #[argh(option, default = "30")]
    build_rate: u32,
    /// seconds a manifest request waits for a build before it gets a retryable answer; 0 waits for the end (default: 20)
    #[argh(option, default = "20")]
    answer_within: u64,
    /// seconds an unknown name or ref or a failed build is the answer without running Nix again (default: 30)
    #[argh(option, default = "30")]
    negative_ttl: u64,
    /// do not serve a moving tag's last image while its new revision builds
    #[argh(switch)]
    no_stale: bool,
    /// the most packages one image name may compose (default: 8)
    #[argh(option, default = "8")]
    max_compose: usize,
    /// an image to build when the server starts and whenever its tag moves, NAME[:TAG]; repeatable
    #[argh(option)]
    prebuild: Vec<String>,
    /// build every package the flake offers (as latest) when the server starts and whenever the flake moves
    #[argh(switch)]
    prebuild_all: bool,
    /// seconds between looks at the flake's revision; 0 looks only on SIGUSR1 or POST /-/refresh (default: 60)
    #[argh(option, default = "60")]
    watch_interval: u64,
    /// attach no SBOM and no provenance to the images built
    #[argh(switch)]
    no_sbom: bool,
    /// where blobs and records are kept: s3://BUCKET/PREFIX for an S3-compatible bucket replicas share (default: the state directory)
    #[argh(option)]
    storage: Option<String>,
    /// the S3 endpoint of a self-hosted store, e.g. http://127.0.0.1:8333 (path-style); without it, AWS S3
    #[argh(option)]
    s3_endpoint: Option<String>,
    /// the S3 region (default: AWS_REGION, else us-east-1)
    #[argh(option)]
    s3_region: Option<String>,
    /// an AWS credentials file ([default] aws_access_key_id, aws_secret_access_key) instead of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    #[argh(option)]
    s3_credentials: Option<PathBuf>,
    /// answer blob GETs with a 307 to a presigned URL of the bucket, true or false; false streams them through (default: true)
    #[argh(option, default = "true")]
    s3_redirect: bool,
    /// seconds a redirect's presigned URL stays valid (default: 300)
    #[argh(option, default = "300")]
    s3_redirect_expiry: u64,
    /// disk space for cached layer blobs, e.g. 500M or 10G (default: 10G)
    #[argh(option, default = "String::from(\"10G\")")]
    cache_size: String,
    /// layer compression: none, gzip[:LEVEL] (1-12) or zstd[:LEVEL] (1-19) (default: gzip:6)
    #[argh(option, default = "Compression::default()")]
    compression: Compression,
    /// a Nix system to serve images for, repeatable; with several, a tag is an image index (default: this machine's)
    #[argh(option)]
    system: Vec<String>,
    /// the nix program to run (default: nix from PATH)
    #[argh(option, default = "PathBuf::from(\"nix\")")]
    nix: PathBuf,
    /// most layers of an image built from a plain package (default: 100)
    #[argh(option, default = "100")]
    max_layers: usize,
    /// seconds a resolved moving tag (latest, a branch) is reused before it is resolved again (default: 60)
    #[argh(option, default = "60")]
    tag_ttl: u64,
    /// the most open connections; past it an idle one is closed to make room, or the newcomer gets a 503 (default: 512)
    #[argh(option, default = "512")]
    max_connections: usize,
    /// the most open connections from one client address (an IPv6 /64); more get a 503 unless an idle one of theirs can be closed (default: 128)
    #[argh(option, default = "128")]
    max_connections_per_ip: usize,
    /// the largest request head in bytes (default: 16384)
    #[argh(option, default = "16384")]
    max_header_bytes: usize,
    /// seconds a client has to send a whole request head (default: 10)
    #[argh(option, default = "10")]
    head_timeout: u64,
    /// seconds an idle keep-alive connection stays open (default: 60)
    #[argh(option, default = "60")]
    keepalive_timeout: u64,
    /// serve /metrics on this address alone (plain HTTP) instead of on the main listener
    #[argh(option)]
    metrics_listen: Option<String>,
}

pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli: Cli = argh::from_env();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Ca(args) => print_ca(args),
        Command::SystemdUnit(args) => {
            let options = UnitOptions { binary: args.binary, privileged_port: args.privileged_port };
            print!("{}", systemd_unit::render(&options)?);
            Ok(())
        }
    }
}

fn print_ca(args: CaArgs) -> Result<(), Box<dyn std::error::Error>> {
    let state_dir = args
        .state_dir
        .or_else(config::default_state_dir)
        .ok_or("no state directory: pass --state-dir, or set STATE_DIRECTORY or XDG_STATE_HOME")?;
    print!("{}", tls::ca_pem(&state_dir)?);
    Ok(())
}

fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (hostnames, cert_files) = tls_args(&args)?;
    let metrics_listen =
        args.metrics_listen.as_deref().map(|text| socket_addr(text, "--metrics-listen")).transpose()?;
    let new_ca = args.new_ca;
    let auth = auth_args(&args)?;
    let config = config_from(args)?;
    if let Err(err) = storage::fs::probe_writable(&config.state_dir) {
        log::warn!(
            "the state directory {} cannot be written ({err}): what is stored there is served, but nothing new \
             is kept: images not built before are held in memory until the process ends, layers not cached are \
             made again on every request, no GC roots are written (Nix may collect what new builds made), no local \
             CA can be created, and a new server certificate is not stored",
            config.state_dir.display()
        );
    }
    let make_transport = if config.tls {
        let options = TlsOptions {
            state_dir: config.state_dir.clone(),
            listen: config.listen.clone(),
            hostnames,
            cert_files,
            new_ca,
        };
        Some(tls::setup(&options)?.with_handshake_timeout(config.limits.head_timeout).into_wrapper())
    } else {
        None
    };
    let listeners = config.listen.iter().map(|addr| bind(*addr)).collect::<Result<Vec<_>, _>>()?;
    let metrics_listener = metrics_listen.map(bind).transpose()?;
    let limits = config.limits.clone();
    let guard = Guard::open(&auth)?;
    // The bound addresses: a port 0 in --listen becomes the port the system chose.
    let bound: Vec<String> = listeners
        .iter()
        .zip(&config.listen)
        .map(|(listener, addr)| listener.local_addr().unwrap_or(*addr).to_string())
        .collect();
    let summary = format!(
        "serving {} for {} on {} over {} (state in {}, compression {} on {} threads)",
        config.flake,
        config.systems.join(", "),
        bound.join(", "),
        if config.tls { "HTTPS" } else { "plain HTTP" },
        config.state_dir.display(),
        config.compression,
        Pool::global().threads()
    );
    if let Some(listener) = metrics_listener {
        serve_metrics(listener, limits.clone())?;
    }
    let what = match &config.storage {
        StorageOptions::Fs => "the state directory".to_string(),
        StorageOptions::S3 { options, .. } => format!("the storage s3://{}/{}", options.bucket, options.prefix),
    };
    let service = Service::open(config).map_err(|e| format!("cannot open {what}: {e}"))?;
    service.start_watch().map_err(|e| format!("cannot start the watch: {e}"))?;
    log::info!("{summary}");
    let web = Web::new(service.clone(), WebOptions { metrics_on_main: metrics_listen.is_none() });
    let app = App::new(guard, Registry::new(service), web);
    match make_transport {
        Some(tls) => http::serve_with(listeners, limits, app, tls)?,
        None => http::serve(listeners, limits, app)?,
    }
    Ok(())
}

fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    http::listen::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// `--metrics-listen`: `/metrics` alone, in plain HTTP, on a thread of its own.
fn serve_metrics(listener: TcpListener, limits: ServerLimits) -> std::io::Result<()> {
    log::info!("serving /metrics on {} (plain HTTP)", listener.local_addr()?);
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        if let Err(e) = http::serve(vec![listener], limits, Arc::new(MetricsOnly)) {
            log::error!("the metrics listener stopped: {e}");
        }
    })?;
    Ok(())
}

/// `--hostname`, and `--tls-cert` with `--tls-key`, checked against `--no-tls`.
fn tls_args(args: &ServeArgs) -> Result<(Vec<String>, Option<CertFiles>), String> {
    let cert_files = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(CertFiles { cert: cert.clone(), key: key.clone() }),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    if args.no_tls && (cert_files.is_some() || !args.hostname.is_empty() || args.new_ca) {
        return Err(
            "--no-tls serves plain HTTP: drop --tls-cert, --tls-key, --hostname and --new-ca, or --no-tls".into()
        );
    }
    if args.new_ca && cert_files.is_some() {
        return Err("--new-ca is about the local CA: drop it with --tls-cert and --tls-key".into());
    }
    Ok((args.hostname.clone(), cert_files))
}

/// `--htpasswd` and `--policy`, checked against `--no-tls`.
fn auth_args(args: &ServeArgs) -> Result<AuthOptions, String> {
    if args.htpasswd.is_some() && args.no_tls && !args.allow_insecure_auth {
        return Err("--htpasswd with --no-tls would send passwords readable by anyone on the way: serve HTTPS, \
                    or add --allow-insecure-auth (e.g. behind a proxy that does TLS)"
            .into());
    }
    if args.allow_insecure_auth && args.htpasswd.is_none() {
        return Err("--allow-insecure-auth goes with --htpasswd".into());
    }
    Ok(AuthOptions { htpasswd: args.htpasswd.clone(), policy: args.policy.clone() })
}

fn config_from(args: ServeArgs) -> Result<Config, String> {
    let storage = storage_options(&args)?;
    let listen_args = if args.listen.is_empty() { vec!["0.0.0.0:5000".to_string()] } else { args.listen };
    let listen = listen_args.iter().map(|text| socket_addr(text, "--listen")).collect::<Result<Vec<_>, _>>()?;
    let state_dir = args
        .state_dir
        .or_else(config::default_state_dir)
        .ok_or("no state directory: pass --state-dir, or set STATE_DIRECTORY or XDG_STATE_HOME")?;
    let positive = |value: u64, flag: &str| {
        if value == 0 {
            Err(format!("{flag} must be at least 1"))
        } else {
            Ok(value)
        }
    };
    Ok(Config {
        flake: config::normalize_flake(&args.flake)?,
        listen,
        state_dir,
        tls: !args.no_tls,
        build_timeout: Duration::from_secs(positive(args.build_timeout, "--build-timeout")?),
        cache_size: config::parse_size(&args.cache_size).map_err(|e| format!("--cache-size: {e}"))?,
        compression: args.compression,
        nix: args.nix,
        max_layers: positive(args.max_layers as u64, "--max-layers")? as usize,
        tag_ttl: Duration::from_secs(args.tag_ttl),
        systems: if args.system.is_empty() { vec![config::host_system()] } else { args.system },
        limits: ServerLimits {
            max_header_bytes: positive(args.max_header_bytes as u64, "--max-header-bytes")? as usize,
            max_connections: positive(args.max_connections as u64, "--max-connections")? as usize,
            max_connections_per_ip: positive(args.max_connections_per_ip as u64, "--max-connections-per-ip")? as usize,
            head_timeout: Duration::from_secs(positive(args.head_timeout, "--head-timeout")?),
            keepalive_timeout: Duration::from_secs(positive(args.keepalive_timeout, "--keepalive-timeout")?),
            ..ServerLimits::default()
        },
        scheduler: SchedulerOptions {
            max_builds: positive(args.max_builds as u64, "--max-builds")? as usize,
            max_evals: positive(args.max_evals as u64, "--max-evals")? as usize,
            build_rate: args.build_rate,
        },
        lookup: LookupOptions { legacy_packages: !args.no_legacy_packages },
        policy: BuildPolicy {
            answer_within: (args.answer_within > 0).then(|| Duration::from_secs(args.answer_within)),
            negative_ttl: Duration::from_secs(args.negative_ttl),
            serve_stale: !args.no_stale,
            max_compose: positive(args.max_compose as u64, "--max-compose")? as usize,
        },
        storage,
        prebuild: PrebuildOptions {
            targets: args.prebuild.iter().map(|target| prebuild_target(target)).collect::<Result<_, _>>()?,
            all: args.prebuild_all,
            watch_interval: (args.watch_interval > 0).then(|| Duration::from_secs(args.watch_interval)),
        },
        attest: AttestOptions { sbom: !args.no_sbom },
    })
}

/// The address `text` names (its first, if a name resolves to several).
fn socket_addr(text: &str, flag: &str) -> Result<SocketAddr, String> {
    let invalid = |why: String| format!("invalid {flag} {text:?}: {why} (expected e.g. 0.0.0.0:5000 or [::1]:5000)");
    let mut addrs = text.to_socket_addrs().map_err(|e| invalid(e.to_string()))?;
    addrs.next().ok_or_else(|| invalid("no address".into()))
}

/// `--storage` and the `--s3-*` flags; credentials from the environment or `--s3-credentials`.
fn storage_options(args: &ServeArgs) -> Result<StorageOptions, String> {
    let s3_flag_set = args.s3_endpoint.is_some() || args.s3_region.is_some() || args.s3_credentials.is_some();
    let Some(url) = &args.storage else {
        return match s3_flag_set {
            true => Err("--s3-endpoint, --s3-region and --s3-credentials need --storage s3://BUCKET/PREFIX".into()),
            false => Ok(StorageOptions::Fs),
        };
    };
    let rest = url.strip_prefix("s3://").ok_or_else(|| format!("--storage {url:?}: not s3://BUCKET/PREFIX"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return Err(format!("--storage {url:?}: {bucket:?} is not a bucket name (3-63 of a-z, 0-9, '-', '.')"));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|part| part == ".." || part == ".") || prefix.contains("//") {
        return Err(format!("--storage {url:?}: the prefix may not hold '.', '..' or empty parts"));
    }
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (access_key, secret_key, session_token) = match &args.s3_credentials {
        Some(file) => storage::s3::read_credentials_file(file).map_err(|e| format!("--s3-credentials: {e}"))?,
        None => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(key), Some(secret)) => (key, secret, env("AWS_SESSION_TOKEN")),
            _ => {
                return Err(
                    "--storage s3://: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass --s3-credentials".into(),
                )
            }
        },
    };
    if let Some(endpoint) = &args.s3_endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!("--s3-endpoint {endpoint:?}: not an http:// or https:// URL"));
        }
    }
    let options = S3Options {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone().or_else(|| env("AWS_REGION")).unwrap_or_else(|| "us-east-1".into()),
        access_key,
        secret_key,
        session_token,
    };
    let expiry = args.s3_redirect_expiry;
    // SigV4 presigned URLs are valid for at most 7 days.
    if !(1..=7 * 24 * 3600).contains(&expiry) {
        return Err("--s3-redirect-expiry: from 1 to 604800 (7 days)".into());
    }
    let redirect = args.s3_redirect.then(|| Duration::from_secs(expiry));
    Ok(StorageOptions::S3 { options, redirect })
}

/// `NAME` or `NAME:TAG` of `--prebuild`.
fn prebuild_target(text: &str) -> Result<(RepoName, Tag), String> {
    let (name, tag) = text.rsplit_once(':').unwrap_or((text, "latest"));
    let name = RepoName::parse(name).ok_or_else(|| {
        format!("--prebuild {text:?}: {name:?} is not an image name (lowercase, e.g. hello or curl/jq)")
    })?;
    let tag = Tag::parse(tag).ok_or_else(|| format!("--prebuild {text:?}: {tag:?} is not a tag"))?;
    Ok((name, tag))
}

//! flakeforge: a container registry that builds images from a Nix flake on demand.
//!
//! The layers, from the socket inwards:
//! - [`tls`]: built-in HTTPS (rustls): a local CA or given certificates, handshakes.
//! - [`http`]: a small HTTP/1.1 server on `httparse`, generic over the byte stream.
//! - [`app`]: the handler the server runs: [`auth`] first (who sent the
//!   request), then `/v2/` to [`registry`]; `/-/`, the operator's pages and
//!   `/metrics` to [`web`].
//! - [`auth`]: access control: users (htpasswd), the policy of who may pull
//!   and build which images, failed-login throttling.
//! - [`registry`]: the OCI Distribution API (pull side): routing, validation, errors.
//! - [`web`]: what is not the registry API: the build status, the watch's
//!   trigger, the operator's pages, `/metrics`.
//! - [`service`]: turns an image name and tag into a stored manifest: build
//!   jobs that outlive clients, stale-while-revalidate, prebuilds and the watch.
//! - [`nix`]: the `nix` subprocess driver: one scheduler for every process,
//!   revisions, attribute lookup, builds, closures.
//! - [`image`]: image assembly: layer tarballs, configs and manifests.
//! - [`cache`]: what is kept on disk and in memory between requests and restarts.
//! - [`reference`], [`media_type`], [`digest`]: the validated names, tags,
//!   manifest forms and digests every layer above shares; [`metrics`]: the
//!   Prometheus metrics every layer records into; [`flight`],
//!   [`rate_limit`], [`reload`] (files read again when they change),
//!   [`atomic_file`] (files replaced whole) and [`signals`]: small tools of
//!   the layers above.
//! - [`systemd_unit`]: the systemd unit for Debian-family hosts, from the
//!   settings the NixOS module shares (`nixos/service.json`).

pub mod app;
pub mod atomic_file;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod digest;
pub mod flight;
pub mod http;
pub mod image;
pub mod media_type;
pub mod metrics;
pub mod nix;
pub mod rate_limit;
pub mod reference;
pub mod registry;
pub mod reload;
pub mod service;
pub mod signals;
pub mod storage;
pub mod systemd_unit;
pub mod tls;
pub mod web;

/// Scratch directories for unit tests, shared with the integration tests
/// (which cannot see `cfg(test)` items).
#[cfg(test)]
#[path = "../tests/common/test_dir.rs"]
pub(crate) mod test_dir;

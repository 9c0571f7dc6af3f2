//! The registry's request handler: every endpoint of the pull API, with
//! each value validated before use, each answer for whom the client is
//! ([`Identity`]: what it may pull, and whether it may have Nix build), and
//! every failure rendered as the spec's JSON error through [`RegistryError`].

use std::io::{self, Write};
use std::sync::Arc;

use serde_json::json;

use super::error::{ErrorCode, RegistryError};
use super::negotiate;
use super::routes::{route, Route};
use crate::auth::{Denied, Identity, Right};
use crate::digest::{Digest, DigestError};
use crate::http::{Request, Response, StreamBody};
use crate::image::artifact::referrers_index;
use crate::image::manifest::media_type_of;
use crate::media_type::OCI_INDEX;
use crate::reference::{RepoName, Tag};
use crate::service::{BlobSource, BuildStatus, JobState, Service, ServiceError};

pub struct Registry {
    service: Arc<Service>,
}

impl Registry {
    pub fn new(service: Arc<Service>) -> Self {
        Registry { service }
    }

    /// Answers a request for a path under `/v2`, from `identity`.
    pub fn handle(&self, request: &Request, identity: &Identity) -> Response {
        with_api_version(self.dispatch(request, identity).unwrap_or_else(RegistryError::into_response))
    }

    /// The answer to a request refused before it was dispatched.
    pub fn refuse(&self, denied: Denied) -> Response {
        with_api_version(RegistryError::from(denied).into_response())
    }

    pub fn overloaded(&self) -> Response {
        RegistryError::new(ErrorCode::TooManyRequests, "too many open connections; try again later")
            .with_status(503)
            .into_response()
    }

    pub fn bad_request(&self, status: u16, message: &str) -> Response {
        let code = if status >= 500 { ErrorCode::Unknown } else { ErrorCode::Unsupported };
        RegistryError::new(code, message).with_status(status).into_response()
    }

    /// The endpoint kind of a path under `/v2`, as the metrics count it.
    pub fn endpoint_kind(&self, request: &Request) -> &'static str {
        route(&request.path).kind()
    }

    fn dispatch(&self, request: &Request, identity: &Identity) -> Result<Response, RegistryError> {
        let route = route(&request.path);
        if request.method != "GET" && request.method != "HEAD" {
            let what = if route == Route::NotFound { "no such endpoint" } else { "this registry is read-only" };
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                format!("{} is not supported: {what}", request.method),
            ));
        }
        match route {
            Route::Base => {
                identity.require_login()?;
                Ok(json_response(b"{}".to_vec()))
            }
            Route::Catalog => {
                if !identity.may_some(Right::Pull) {
                    return Err(identity.refused("may pull no image").into());
                }
                let mut names = self.service.catalog(request.peer.ip()).map_err(|e| service_error(e, "the catalog"))?;
                identity.retain_pullable(&mut names);
                let (names, link) = paginate(names, request)?;
                Ok(with_link(json_response(serde_json::to_vec(&json!({ "repositories": names })).unwrap()), link))
            }
            Route::Tags { name } => {
                let name = parse_name(name)?;
                identity.require(Right::Pull, &name.canonical())?;
                let tags = self.service.tags(&name, request.peer.ip()).map_err(|e| service_error(e, name.as_str()))?;
                let (tags, link) = paginate(tags, request)?;
                let body = json!({ "name": name.as_str(), "tags": tags });
                Ok(with_link(json_response(serde_json::to_vec(&body).unwrap()), link))
            }
            Route::Manifest { name, reference } => {
                let name = parse_name(name)?;
                identity.require(Right::Pull, &name.canonical())?;
                let what = name.to_string();
                self.manifest(request, identity, name, reference).map_err(|e| self.unless_store_down(e, &what))
            }
            Route::Blob { name, digest } => {
                let name = parse_name(name)?;
                identity.require(Right::Pull, &name.canonical())?;
                let digest = parse_digest(digest, ErrorCode::BlobUnknown)?;
                self.require_holder(identity, &digest)?;
                self.blob(request, digest.clone()).map_err(|e| self.unless_store_down(e, &format!("blob {digest}")))
            }
            Route::Referrers { name, digest } => {
                let name = parse_name(name)?;
                identity.require(Right::Pull, &name.canonical())?;
                let subject = parse_digest(digest, ErrorCode::ManifestUnknown)?;
                self.require_holder(identity, &subject)?;
                self.referrers(request, subject)
            }
            Route::Upload { .. } => Err(RegistryError::new(ErrorCode::Unsupported, "this registry is read-only")),
            Route::NotFound => Err(RegistryError::new(ErrorCode::Unsupported, "no such endpoint").with_status(404)),
        }
    }

    /// A "not known" or failure answered while the store is down is a 503:
    /// what was not found may well be there.
    fn unless_store_down(&self, error: RegistryError, what: &str) -> RegistryError {
        if error.status >= 404 && error.status != 429 && self.service.store_is_down() {
            service_error(ServiceError::StoreUnavailable, what)
        } else {
            error
        }
    }

    fn manifest(
        &self,
        request: &Request,
        identity: &Identity,
        name: RepoName,
        reference: &str,
    ) -> Result<Response, RegistryError> {
        let (digest, manifest) = if reference.contains(':') {
            let digest = parse_digest(reference, ErrorCode::ManifestUnknown)?;
            self.require_holder(identity, &digest)?;
            let manifest = self.service.manifest(&digest).ok_or_else(|| {
                RegistryError::new(ErrorCode::ManifestUnknown, format!("manifest {digest} is not known here"))
            })?;
            (digest, manifest)
        } else {
            // As the conformance suite and CNCF distribution answer: no such
            // tag can exist, so its manifest is unknown (a bad digest is 400).
            let tag = Tag::parse(reference).ok_or_else(|| {
                RegistryError::new(
                    ErrorCode::ManifestUnknown,
                    "no such tag: tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}",
                )
            })?;
            if let Some(subject) = tag.referrers_subject() {
                self.require_holder(identity, &subject)?;
                return self.referrers_tag(&subject);
            }
            let format = negotiate::manifest_format(request);
            if identity.may(Right::Build, &name.canonical()) {
                self.service
                    .tag_manifest(&name, &tag, format, request.peer.ip())
                    .map_err(|e| service_error(e, &format!("{name}:{tag}")))?
            } else {
                // What is built is all a client that may not build gets: no
                // Nix runs for it (a manifest lost for good is not built).
                let digest = self.service.built(&name, &tag).map(|built| built.manifests[&format].clone());
                match digest.and_then(|digest| Some((digest.clone(), self.service.manifest(&digest)?))) {
                    Some(found) => found,
                    None => {
                        let what = format!("may not build {name}, and {name}:{tag} is not built yet");
                        return Err(identity.refused(&what).into());
                    }
                }
            }
        };
        let media_type = media_type_of(&manifest).unwrap_or_else(|| crate::media_type::OCI_MANIFEST.to_string());
        Ok(Response::new(200)
            .header("Content-Type", media_type)
            .header("Docker-Content-Digest", digest.to_string())
            .header("ETag", format!("\"{digest}\""))
            .bytes(manifest))
    }

    /// `GET /v2/<name>/referrers/<digest>[?artifactType=T]`: the artifacts
    /// that refer to the manifest `digest` (of any name, as manifests by
    /// digest are), an empty index when there are none.
    fn referrers(&self, request: &Request, digest: Digest) -> Result<Response, RegistryError> {
        let mut referrers = self.service.referrers(&digest);
        let filter = request.query_param("artifactType");
        if let Some(artifact_type) = &filter {
            referrers.retain(|referrer| referrer.artifact_type == *artifact_type);
        }
        let response = Response::new(200).header("Content-Type", OCI_INDEX);
        let response = match filter {
            Some(_) => response.header("OCI-Filters-Applied", "artifactType"),
            None => response,
        };
        Ok(response.bytes(referrers_index(&referrers)))
    }

    /// The referrers tag `sha256-<hex>`: the same index as the referrers
    /// API, as a manifest; unknown while nothing refers to the digest.
    fn referrers_tag(&self, subject: &Digest) -> Result<Response, RegistryError> {
        let referrers = self.service.referrers(subject);
        if referrers.is_empty() {
            let message = format!("nothing refers to {subject} here");
            return Err(RegistryError::new(ErrorCode::ManifestUnknown, message));
        }
        let index = referrers_index(&referrers);
        let digest = Digest::of(&index);
        Ok(Response::new(200)
            .header("Content-Type", OCI_INDEX)
            .header("Docker-Content-Digest", digest.to_string())
            .header("ETag", format!("\"{digest}\""))
            .bytes(index))
    }

    /// A manifest or blob by digest only for a client that may pull an
    /// image holding it, whatever name it is asked under: nobody fetches
    /// another image's layers by digest. An unknown digest is refused alike.
    fn require_holder(&self, identity: &Identity, digest: &Digest) -> Result<(), Denied> {
        if identity.may_every(Right::Pull) {
            return Ok(());
        }
        match self.service.image_names(digest).iter().any(|name| identity.may(Right::Pull, name)) {
            true => Ok(()),
            false => Err(identity.refused(&format!("may pull no image that holds {digest}"))),
        }
    }

    fn blob(&self, request: &Request, digest: Digest) -> Result<Response, RegistryError> {
        let source = self
            .service
            .blob(&digest)
            .ok_or_else(|| RegistryError::new(ErrorCode::BlobUnknown, format!("blob {digest} is not known here")))?;
        if request.method == "GET" {
            if let Some(url) = self.service.blob_redirect(&digest) {
                return Ok(Response::new(307)
                    .header("Location", url)
                    .header("Docker-Content-Digest", digest.to_string())
                    .bytes(Vec::new()));
            }
        }
        let size = source.size();
        let mut response = Response::new(200)
            .header("Content-Type", "application/octet-stream")
            .header("Docker-Content-Digest", digest.to_string())
            .header("ETag", format!("\"{digest}\""))
            .header("Accept-Ranges", "bytes");
        let (start, end) = match request.header("Range").map(|r| parse_range(r, size)) {
            None | Some(RangeRequest::Ignored) => (0, size),
            Some(RangeRequest::Satisfiable(start, end)) => {
                response.status = 206;
                response = response.header("Content-Range", format!("bytes {start}-{}/{size}", end - 1));
                (start, end)
            }
            Some(RangeRequest::Unsatisfiable) => {
                let error = RegistryError::new(ErrorCode::BlobUnknown, "requested range not satisfiable")
                    .with_status(416)
                    .with_detail(json!({ "size": size }));
                return Ok(error.into_response().header("Content-Range", format!("bytes */{size}")));
            }
        };
        let source = if request.method == "HEAD" {
            source
        } else {
            self.service.open_blob(source).map_err(|e| service_error(e, &format!("blob {digest}")))?
        };
        let body = BlobBody { service: self.service.clone(), source, start, end };
        Ok(response.stream(Some(end - start), Box::new(body)))
    }
}

fn with_api_version(response: Response) -> Response {
    if response.headers.iter().any(|(n, _)| n == "Docker-Distribution-API-Version") {
        response
    } else {
        response.header("Docker-Distribution-API-Version", "registry/2.0")
    }
}

/// Seconds a client is asked to wait before it asks again while a build
/// runs: the next request waits up to `--answer-within` itself, so a short
/// pause keeps the image's arrival close to the build's end.
const RETRY_BUILDING_SECS: u64 = 5;

/// The one mapping from the engine's errors to the client's; `what` is the
/// image (`name:tag`), name or blob asked for.
fn service_error(err: ServiceError, what: &str) -> RegistryError {
    match err {
        ServiceError::NameUnknown(message) => RegistryError::new(ErrorCode::NameUnknown, format!("{what}: {message}")),
        ServiceError::NameInvalid(message) => RegistryError::new(ErrorCode::NameInvalid, message),
        ServiceError::TagUnknown(message) => {
            RegistryError::new(ErrorCode::ManifestUnknown, format!("{what}: {message}"))
        }
        ServiceError::Build { message, build } => {
            let (text, detail) = match build {
                Some(id) => (
                    format!("building {what} failed: {message} (build {id}; its log: /-/builds/{id}/log)"),
                    json!({ "build": id }),
                ),
                None => (format!("building {what} failed: {message}"), json!({})),
            };
            RegistryError::new(ErrorCode::ManifestUnknown, text).with_detail(detail)
        }
        ServiceError::Building(status) => RegistryError::new(ErrorCode::TooManyRequests, building_message(&status))
            .with_detail(json!({ "build": status.id }))
            .with_retry_after(RETRY_BUILDING_SECS),
        ServiceError::TooManyBuilds => RegistryError::new(ErrorCode::TooManyRequests, format!("{what}: {err}"))
            .with_retry_after(RETRY_BUILDING_SECS),
        ServiceError::RateLimited { retry_after } => {
            RegistryError::new(ErrorCode::TooManyRequests, format!("{what}: {err}"))
                .with_retry_after(retry_after.as_secs().max(1))
        }
        ServiceError::BlobUnknown(message) => RegistryError::new(ErrorCode::BlobUnknown, message),
        ServiceError::StoreUnavailable => RegistryError::new(ErrorCode::Unknown, format!("{what}: {err}"))
            .with_status(503)
            .with_retry_after(RETRY_BUILDING_SECS),
        ServiceError::Internal(_) => RegistryError::new(ErrorCode::Unknown, err.to_string()),
    }
}

/// What a client reads while its image builds: which image for which
/// systems, how long, how far, which build, and to ask again.
fn building_message(status: &BuildStatus) -> String {
    let image = format!("{}:{} for {}", status.image, status.tag, status.systems.join(", "));
    let elapsed = status.duration_secs.round() as u64;
    let progress = status.progress;
    let (doing, how_far) = match status.state {
        JobState::Queued => ("is waiting for a build slot", format!("{elapsed} s so far")),
        JobState::Running if progress.total > 0 => (
            "is being built",
            format!("{elapsed} s so far, {} of {} derivations built", progress.built, progress.total),
        ),
        JobState::Running => ("is being built", format!("{elapsed} s so far")),
        _ => ("is being prepared", format!("{elapsed} s so far")),
    };
    format!("{image} {doing} (build {}, {how_far}); try again shortly", status.id)
}

fn parse_name(name: &str) -> Result<RepoName, RegistryError> {
    RepoName::parse(name).ok_or_else(|| {
        RegistryError::new(
            ErrorCode::NameInvalid,
            "invalid repository name: lowercase letters and digits separated by '.', '_', '__', '-' or '/'",
        )
    })
}

/// A malformed digest is DIGEST_INVALID; a well-formed one of another algorithm is simply unknown here.
fn parse_digest(digest: &str, unknown: ErrorCode) -> Result<Digest, RegistryError> {
    digest.parse().map_err(|err| match err {
        DigestError::Invalid => {
            RegistryError::new(ErrorCode::DigestInvalid, "invalid digest: expected sha256:<64 hex digits>")
        }
        DigestError::Unsupported => RegistryError::new(unknown, "only sha256 digests are served here"),
    })
}

fn json_response(body: Vec<u8>) -> Response {
    Response::new(200).header("Content-Type", "application/json").bytes(body)
}

fn with_link(response: Response, link: Option<String>) -> Response {
    match link {
        Some(link) => response.header("Link", link),
        None => response,
    }
}

/// `n` and `last` pagination over a sorted list, with the `Link` to the next page.
fn paginate(items: Vec<String>, request: &Request) -> Result<(Vec<String>, Option<String>), RegistryError> {
    let n =
        match request.query_param("n") {
            Some(n) => Some(n.parse::<usize>().map_err(|_| {
                RegistryError::new(ErrorCode::PaginationNumberInvalid, "n must be a non-negative integer")
            })?),
            None => None,
        };
    let last = request.query_param("last");
    let rest: Vec<String> = items.into_iter().filter(|item| last.as_ref().is_none_or(|l| item > l)).collect();
    let Some(n) = n else { return Ok((rest, None)) };
    let more = rest.len() > n;
    let page: Vec<String> = rest.into_iter().take(n).collect();
    let link = match page.last() {
        Some(last) if more => Some(format!("<{}?n={n}&last={last}>; rel=\"next\"", request.path)),
        _ => None,
    };
    Ok((page, link))
}

/// What a `Range` header asks of a blob of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    Satisfiable(u64, u64),
    Unsatisfiable,
    /// Not a single byte range: the whole blob is sent, as RFC 9110 allows.
    Ignored,
}

/// A single `bytes=` range, as `start..end` (end exclusive). Public for
/// the fuzz target.
pub fn parse_range(header: &str, size: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return RangeRequest::Ignored };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeRequest::Ignored };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        (true, _, Some(0)) => RangeRequest::Unsatisfiable,
        (true, _, Some(suffix)) if size > 0 => RangeRequest::Satisfiable(size.saturating_sub(suffix), size),
        (true, _, Some(_)) => RangeRequest::Unsatisfiable,
        (false, Some(start), _) if start >= size => RangeRequest::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => RangeRequest::Satisfiable(start, size),
        (false, Some(start), Some(end)) if end >= start => RangeRequest::Satisfiable(start, end.min(size - 1) + 1),
        _ => RangeRequest::Ignored,
    }
}

struct BlobBody {
    service: Arc<Service>,
    source: BlobSource,
    start: u64,
    end: u64,
}

impl StreamBody for BlobBody {
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> io::Result<()> {
        self.service.write_blob(self.source, self.start, self.end, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(header: &str, size: u64) -> Option<(u64, u64)> {
        match parse_range(header, size) {
            RangeRequest::Satisfiable(a, b) => Some((a, b)),
            RangeRequest::Unsatisfiable => Some((u64::MAX, u64::MAX)),
            RangeRequest::Ignored => None,
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(range("bytes=90-", 100), Some((90, 100)));
        assert_eq!(range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(range("bytes=-200", 100), Some((0, 100)));
        assert_eq!(range("bytes=50-500", 100), Some((50, 100)));
        assert_eq!(range("bytes=100-", 100), Some((u64::MAX, u64::MAX)));
        assert_eq!(range("bytes=-0", 100), Some((u64::MAX, u64::MAX)));
        assert_eq!(range("bytes=0-1,5-6", 100), None);
        assert_eq!(range("items=0-1", 100), None);
        assert_eq!(range("bytes=9-3", 100), None);
    }
}

//! From a request path to an API endpoint. Names contain slashes, so the
//! endpoint is found from the end: the last `manifests`, `blobs`, `tags` or
//! `referrers` segment.

/// An endpoint of the API with its raw (not yet validated) parts.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Base,
    Catalog,
    Tags {
        name: &'a str,
    },
    Manifest {
        name: &'a str,
        reference: &'a str,
    },
    Blob {
        name: &'a str,
        digest: &'a str,
    },
    Referrers {
        name: &'a str,
        digest: &'a str,
    },
    /// Push endpoints (`blobs/uploads/...`): known, but not served here.
    Upload {
        name: &'a str,
    },
    NotFound,
}

impl Route<'_> {
    /// The endpoint's kind as the metrics count it.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags { .. } => "tags",
            Route::Manifest { .. } => "manifest",
            Route::Blob { .. } => "blob",
            Route::Referrers { .. } => "referrers",
            Route::Upload { .. } => "upload",
            Route::NotFound => "not_found",
        }
    }
}

pub fn route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix("/v2") else { return Route::NotFound };
    let rest = match rest {
        "" | "/" => return Route::Base,
        _ => match rest.strip_prefix('/') {
            Some(rest) => rest,
            None => return Route::NotFound,
        },
    };
    if rest == "_catalog" {
        return Route::Catalog;
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Route::Tags { name };
    }
    if let Some(at) = rest.find("/blobs/uploads") {
        let tail = &rest[at + "/blobs/uploads".len()..];
        if tail.is_empty() || tail.starts_with('/') {
            return Route::Upload { name: &rest[..at] };
        }
    }
    let Some((head, last)) = rest.rsplit_once('/') else { return Route::NotFound };
    let Some((name, kind)) = head.rsplit_once('/') else { return Route::NotFound };
    match kind {
        "manifests" => Route::Manifest { name, reference: last },
        "blobs" => Route::Blob { name, digest: last },
        "referrers" => Route::Referrers { name, digest: last },
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(route("/v2"), Route::Base);
        assert_eq!(route("/v2/_catalog"), Route::Catalog);
        assert_eq!(route("/v2/a/b/tags/list"), Route::Tags { name: "a/b" });
        assert_eq!(route("/v2/curl/jq/manifests/latest"), Route::Manifest { name: "curl/jq", reference: "latest" });
        assert_eq!(route("/v2/x/manifests/sha256:ab"), Route::Manifest { name: "x", reference: "sha256:ab" });
        assert_eq!(route("/v2/a/manifests/b/manifests/c"), Route::Manifest { name: "a/manifests/b", reference: "c" });
        assert_eq!(route("/v2/a/blobs/sha256:00"), Route::Blob { name: "a", digest: "sha256:00" });
        assert_eq!(route("/v2/a/referrers/sha256:00"), Route::Referrers { name: "a", digest: "sha256:00" });
        assert_eq!(route("/v2/a/b/blobs/uploads/"), Route::Upload { name: "a/b" });
        assert_eq!(route("/v2/a/blobs/uploads/1234"), Route::Upload { name: "a" });
        assert_eq!(route("/v2/a/tags/other"), Route::NotFound);
        assert_eq!(route("/v2/manifests/latest"), Route::NotFound);
        assert_eq!(route("/v3/"), Route::NotFound);
        assert_eq!(route("/v2x"), Route::NotFound);
        assert_eq!(route("/"), Route::NotFound);
    }
}

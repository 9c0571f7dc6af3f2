//! The spec's error codes as one enum, and the one mapping from an error to
//! an HTTP status and the `{"errors":[{"code","message","detail"}]}` body.

use serde_json::json;

use crate::auth::{self, Denied};
use crate::http::Response;

/// Error codes of the OCI Distribution Spec that a pull-only registry returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    PaginationNumberInvalid,
    Unsupported,
    /// No credentials, or wrong ones.
    Unauthorized,
    /// Logged in, but without the right.
    Denied,
    TooManyRequests,
    /// Not in the spec's table, but the code every registry uses for its own faults.
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BlobUnknown | ErrorCode::ManifestUnknown | ErrorCode::NameUnknown => 404,
            ErrorCode::DigestInvalid
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::PaginationNumberInvalid => 400,
            ErrorCode::Unsupported => 405,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Denied => 403,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Unknown => 500,
        }
    }
}

/// An error on its way to a client. The message never holds server paths.
#[derive(Debug, Clone)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub status: u16,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Seconds for `Retry-After` (retryable answers get 1 unless set).
    pub retry_after: Option<u64>,
}

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError { code, status: code.status(), message: message.into(), detail: None, retry_after: None }
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn body(&self) -> Vec<u8> {
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(detail) = &self.detail {
            error["detail"] = detail.clone();
        }
        serde_json::to_vec(&json!({ "errors": [error] })).expect("JSON values serialize")
    }

    pub fn into_response(self) -> Response {
        let mut response = Response::new(self.status)
            .header("Content-Type", "application/json")
            .header("Docker-Distribution-API-Version", "registry/2.0");
        if self.code == ErrorCode::Unsupported {
            response = response.header("Allow", "GET, HEAD");
        }
        if self.code == ErrorCode::Unauthorized {
            response = response.header("WWW-Authenticate", auth::CHALLENGE);
        }
        if self.code == ErrorCode::TooManyRequests || self.status == 503 {
            response = response.header("Retry-After", self.retry_after.unwrap_or(1).to_string());
        }
        if self.status == 429 {
            // containerd shows only the status line of an answer to a HEAD
            // request (kubelet's events too): the message goes there as well.
            response = response.reason(&format!("Too Many Requests: {}", self.message));
        }
        response.bytes(self.body())
    }
}

impl From<Denied> for RegistryError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Unauthenticated(message) => RegistryError::new(ErrorCode::Unauthorized, message),
            Denied::Forbidden(message) => RegistryError::new(ErrorCode::Denied, message),
            Denied::Throttled(wait) => RegistryError::new(ErrorCode::TooManyRequests, denied.to_string())
                .with_retry_after(auth::retry_after_secs(wait)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_spec_body() {
        let err = RegistryError::new(ErrorCode::NameInvalid, "bad name").with_detail(json!({"name": "A"}));
        let body: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
        assert_eq!(body, json!({"errors": [{"code": "NAME_INVALID", "message": "bad name", "detail": {"name": "A"}}]}));
        assert_eq!(err.status, 400);
    }

    #[test]
    fn statuses() {
        assert_eq!(ErrorCode::Unsupported.status(), 405);
        assert_eq!(ErrorCode::TooManyRequests.status(), 429);
        assert_eq!(ErrorCode::BlobUnknown.status(), 404);
        assert_eq!(ErrorCode::DigestInvalid.status(), 400);
        assert_eq!(ErrorCode::Unauthorized.status(), 401);
        assert_eq!(ErrorCode::Denied.status(), 403);
    }

    #[test]
    fn refusals_carry_the_challenge_or_the_wait() {
        let response = RegistryError::from(Denied::Unauthenticated("authentication required".into())).into_response();
        assert_eq!(response.status, 401);
        assert!(response.headers.iter().any(|(n, v)| n == "WWW-Authenticate" && v == auth::CHALLENGE));
        let response = RegistryError::from(Denied::Throttled(std::time::Duration::from_millis(1500))).into_response();
        assert_eq!(response.status, 429);
        assert!(response.headers.iter().any(|(n, v)| n == "Retry-After" && v == "2"));
        assert_eq!(RegistryError::from(Denied::Forbidden("no".into())).code, ErrorCode::Denied);
    }
}

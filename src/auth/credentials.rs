//! The credentials a request carries: HTTP Basic (RFC 7617) in its
//! `Authorization` header, the one scheme flakeforge's challenge offers.

use base64::Engine as _;

use crate::http::Request;

#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    None,
    Basic {
        user: String,
        password: String,
    },
    /// A header that cannot be used, and why (for the client).
    Unusable(&'static str),
}

/// The request's credentials. An empty user name with an empty password,
/// which containers/image (podman, skopeo) sends when it has none, is none.
pub fn of_request(request: &Request) -> Credentials {
    let Some(header) = request.header("Authorization") else { return Credentials::None };
    let (scheme, value) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::Unusable("only HTTP Basic authentication is supported here");
    }
    let malformed = Credentials::Unusable("malformed Basic credentials");
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value.trim()) else { return malformed };
    let Ok(decoded) = String::from_utf8(decoded) else { return malformed };
    let Some((user, password)) = decoded.split_once(':') else { return malformed };
    if user.is_empty() && password.is_empty() {
        return Credentials::None;
    }
    Credentials::Basic { user: user.to_string(), password: password.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(header: Option<&str>) -> Credentials {
        let request = Request {
            method: "GET".into(),
            path: "/v2/".into(),
            query: None,
            headers: header.map(|h| ("authorization".to_string(), h.to_string())).into_iter().collect(),
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        };
        of_request(&request)
    }

    #[test]
    fn reads_basic_credentials() {
        // "alice:pass:word": the password may hold colons, the user name not.
        let basic = Credentials::Basic { user: "alice".into(), password: "pass:word".into() };
        assert_eq!(with(Some("Basic YWxpY2U6cGFzczp3b3Jk")), basic);
        assert_eq!(with(Some("basic  YWxpY2U6cGFzczp3b3Jk ")), basic);
        assert_eq!(with(None), Credentials::None);
        // ":" is what podman and skopeo send without credentials.
        assert_eq!(with(Some("Basic Og==")), Credentials::None);
        assert!(matches!(with(Some("Bearer abc")), Credentials::Unusable(_)));
        assert!(matches!(with(Some("Basic !!!")), Credentials::Unusable(_)));
        assert!(matches!(with(Some("Basic YWxpY2U=")), Credentials::Unusable(_)));
    }
}

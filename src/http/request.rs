//! Parsing a request head with `httparse`.

/// One parsed request head. The body, if any, is not read by the handler.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method as sent (`GET`, `HEAD`, ...).
    pub method: String,
    /// The path part of the target, not percent-decoded.
    pub path: String,
    /// The query string without the `?`, if any.
    pub query: Option<String>,
    /// Header names as sent; look them up with [`Request::header`].
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every header of that name, in order (e.g. several `Accept` headers).
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A query parameter, percent-decoded (`+` stays `+`).
    pub fn query_param(&self, key: &str) -> Option<String> {
        todo!("{key}")
    }
}

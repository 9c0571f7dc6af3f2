//! Responses: status, headers and a body that is either in memory or streamed.

use std::io::{self, Write};

/// A body produced while it is sent (a blob read from disk, or generated).
pub trait StreamBody: Send {
    /// Writes the whole body. An error aborts the response and closes the connection.
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> io::Result<()>;
}

pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// `len` is sent as Content-Length when known; otherwise chunked.
    Stream { len: Option<u64>, source: Box<dyn StreamBody> },
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Body::Empty }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn bytes(mut self, body: Vec<u8>) -> Self {
        self.body = Body::Bytes(body);
        self
    }

    pub fn stream(mut self, len: Option<u64>, source: Box<dyn StreamBody>) -> Self {
        self.body = Body::Stream { len, source };
        self
    }
}

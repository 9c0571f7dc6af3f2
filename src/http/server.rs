//! Accepting connections and running the request/response loop on each.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use super::{Request, Response};

/// What the registry plugs into the server.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: &Request) -> Response;
    /// The answer to a connection past `max_connections` (then closed).
    fn overloaded(&self) -> Response;
    /// The answer to a head that is malformed, too large or too slow.
    fn bad_request(&self, status: u16, message: &str) -> Response;
}

/// A byte stream the server can run HTTP over: plain TCP, or TLS on TCP.
pub trait Transport: Read + Write + Send {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub head_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub write_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_header_bytes: 16 * 1024,
            max_connections: 512,
            head_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves on every listener until the process ends.
pub fn serve(listeners: Vec<TcpListener>, limits: ServerLimits, handler: Arc<dyn Handler>) -> io::Result<()> {
    let _ = (listeners, limits, handler);
    todo!()
}

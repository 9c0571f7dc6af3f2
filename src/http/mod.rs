//! A small HTTP/1.1 server on `httparse`: one thread per connection,
//! keep-alive and pipelining, bounded heads, connection counts and timeouts.
//! Generic over the byte stream (see [`Transport`]) so TLS plugs in below it.

pub mod request;
pub mod response;
pub mod server;

pub use request::Request;
pub use response::{Body, Response, StreamBody};
pub use server::{serve, Handler, ServerLimits, Transport};

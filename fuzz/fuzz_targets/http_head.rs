//! The HTTP layer from the first byte: request heads (split across reads
//! at places the input chooses, pipelined, with bodies), answered by a
//! handler that routes the path and reads query parameters and headers as
//! the registry does. Nothing may panic, and whatever is sent back must be
//! a sequence of well-formed responses.
#![no_main]

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use flakeforge::http::{self, Handler, Request, Response, ServerLimits, StreamBody, Transport};
use flakeforge::registry::routes::{route, Route};
use libfuzzer_sys::fuzz_target;

/// The input as what the client sends, in reads of sizes the input's first byte picks.
struct Replay<'a> {
    input: &'a [u8],
    chunk: usize,
    output: Vec<u8>,
}

impl Read for Replay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.len().min(buf.len()).min(self.chunk);
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Replay<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Replay<'_> {
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }

    fn set_write_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

struct Chunks(Vec<Vec<u8>>);

impl StreamBody for Chunks {
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> io::Result<()> {
        self.0.iter().try_for_each(|chunk| out.write_all(chunk))
    }
}

/// Answers as the registry would route; remembers which requests were `HEAD`.
#[derive(Default)]
struct Registryish {
    head_only: Mutex<Vec<bool>>,
}

impl Handler for Registryish {
    fn handle(&self, request: &Request) -> Response {
        self.head_only.lock().unwrap().push(request.method == "HEAD");
        let _ = (request.query_param("n"), request.query_param("last"), request.header("accept"));
        let _ = request.headers_named("accept").count();
        match route(&request.path) {
            Route::Manifest { name, reference } => {
                let _ = (flakeforge::reference::RepoName::parse(name), flakeforge::reference::Tag::parse(reference));
                Response::new(200).stream(None, Box::new(Chunks(vec![b"ab".to_vec(), Vec::new(), b"c".to_vec()])))
            }
            Route::Blob { digest, .. } => {
                let _ = digest.parse::<flakeforge::digest::Digest>();
                Response::new(206).stream(Some(3), Box::new(Chunks(vec![b"xyz".to_vec()])))
            }
            Route::NotFound => Response::new(404).bytes(request.path.as_bytes().to_vec()),
            _ => Response::new(200).header("Content-Type", "application/json").bytes(b"{}".to_vec()),
        }
    }

    fn overloaded(&self) -> Response {
        Response::new(503)
    }

    fn bad_request(&self, status: u16, message: &str) -> Response {
        Response::new(status).bytes(message.as_bytes().to_vec())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else { return };
    let mut replay = Replay { input, chunk: usize::from(first % 64) + 1, output: Vec::new() };
    let limits = ServerLimits { max_header_bytes: 2048, ..ServerLimits::default() };
    let handler = Registryish::default();
    http::handle_connection(&mut replay, SocketAddr::from(([127, 0, 0, 1], 1)), &limits, &handler);
    // Every answer starts with a status line; a HEAD's has no body.
    let head_only = handler.head_only.into_inner().unwrap();
    let mut rest = &replay.output[..];
    for answer in 0.. {
        if rest.is_empty() {
            break;
        }
        assert!(rest.starts_with(b"HTTP/1.1 "), "not a response: {:?}", String::from_utf8_lossy(rest));
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = response.parse(rest) else { panic!("a broken response head") };
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap());
        let length = if head_only.get(answer) == Some(&true) { Some(0) } else { length };
        match length {
            Some(length) if rest.len() >= head + length => rest = &rest[head + length..],
            // Chunked, close-delimited, or a stream cut short: the last one.
            _ => break,
        }
    }
});

//! `GET /-/builds`: running, queued and recent builds and what Nix is
//! doing ([`crate::service::BuildsStatus`], stable JSON documented in the
//! README); `GET /-/builds/<id>`: one build; `GET /-/builds/<id>/log`: its
//! whole log as text, streamed while the build runs.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use super::{error, json_response};
use crate::http::{Response, StreamBody};
use crate::service::{Job, Service};

/// How long a log reader waits for more before it looks again.
const LOG_POLL: Duration = Duration::from_secs(1);

pub fn list(service: &Service) -> Response {
    json_response(200, &service.builds())
}

pub fn one(service: &Service, id: &str) -> Response {
    match service.build(id) {
        Some(job) => json_response(200, &job.status()),
        None => unknown(id),
    }
}

pub fn log(service: &Service, id: &str) -> Response {
    match service.build(id) {
        Some(job) => Response::new(200)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Cache-Control", "no-store")
            .stream(None, Box::new(FollowLog(job))),
        None => unknown(id),
    }
}

fn unknown(id: &str) -> Response {
    error(404, &format!("no build {id} (finished builds are listed for a while only)"))
}

/// The log so far, then what comes, until the build ends.
struct FollowLog(Arc<Job>);

impl StreamBody for FollowLog {
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> io::Result<()> {
        let mut at = 0;
        loop {
            let chunk = self.0.log_from(at, LOG_POLL);
            if !chunk.text.is_empty() {
                out.write_all(chunk.text.as_bytes())?;
                // Every piece as it comes: someone is watching the build.
                out.flush()?;
            }
            at = chunk.next;
            if chunk.finished {
                return Ok(());
            }
        }
    }
}

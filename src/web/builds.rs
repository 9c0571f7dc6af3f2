//! `GET /-/builds`: running, queued and recent builds and what Nix is
//! doing ([`crate::service::BuildsStatus`], stable JSON documented in the
//! README); `GET /-/builds/<id>`: one build; `GET /-/builds/<id>/log`: its
//! whole log as text, streamed while the build runs.
//!
//! Build logs are for those who can start builds: a client sees the builds
//! of images it may build (an admin all of them), and one with no build
//! right at all is refused. Another's build is as unknown as a wrong id.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use super::{error, json_response};
use crate::auth::{Denied, Identity, Right};
use crate::http::{Response, StreamBody};
use crate::service::{BuildStatus, BuildsStatus, Job, Service};

/// How long a log reader waits for more before it looks again.
const LOG_POLL: Duration = Duration::from_secs(1);

pub fn list(service: &Service, identity: &Identity) -> Result<Response, Denied> {
    Ok(json_response(200, &visible_builds(service, identity)?))
}

pub fn one(service: &Service, identity: &Identity, id: &str) -> Result<Response, Denied> {
    Ok(match visible(service, identity, id)? {
        Some(job) => json_response(200, &job.status()),
        None => unknown(id),
    })
}

pub fn log(service: &Service, identity: &Identity, id: &str) -> Result<Response, Denied> {
    Ok(match visible(service, identity, id)? {
        Some(job) => Response::new(200)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Cache-Control", "no-store")
            .stream(None, Box::new(FollowLog(job))),
        None => unknown(id),
    })
}

/// Whether `identity` may see builds at all: it may build some image.
pub(super) fn may_see_builds(identity: &Identity) -> bool {
    identity.may_some(Right::Build)
}

fn require_some_builds(identity: &Identity) -> Result<(), Denied> {
    match may_see_builds(identity) {
        true => Ok(()),
        false => Err(identity.refused("may build no image, so may see no build")),
    }
}

/// Of `builds`, those `identity` may see: of images it may build.
pub(super) fn seen_by(identity: &Identity, mut builds: Vec<BuildStatus>) -> Vec<BuildStatus> {
    builds.retain(|build| identity.may(Right::Build, &build.image));
    builds
}

/// The build status for `identity` (the list and pages of builds), or why not.
pub(super) fn visible_builds(service: &Service, identity: &Identity) -> Result<BuildsStatus, Denied> {
    require_some_builds(identity)?;
    let BuildsStatus { builds, nix } = service.builds();
    Ok(BuildsStatus { builds: seen_by(identity, builds), nix })
}

/// Build `id` if `identity` may see it.
pub(super) fn visible(service: &Service, identity: &Identity, id: &str) -> Result<Option<Arc<Job>>, Denied> {
    require_some_builds(identity)?;
    Ok(service.build(id).filter(|job| identity.may(Right::Build, &job.key.0)))
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

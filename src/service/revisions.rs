//! Which flake revision each tag stands for now (`nix flake metadata`),
//! kept for `--tag-ttl` (a 40-hex revision for good), a failure for
//! `--negative-ttl`; one lookup for concurrent askers of a tag. The watch
//! looks again on its own schedule; everyone else reads what it found.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

use super::ServiceError;
use crate::flight::Flights;
use crate::nix::{flakeref, LockedFlake, Nix, NixError};
use crate::reference::Tag;

/// Tags whose revision is kept (unknown refs included).
const TAGS_KEPT: usize = 4096;

pub struct Revisions {
    flake: String,
    entries: Mutex<LruCache<String, Entry>>,
    running: Flights<String, Result<LockedFlake, ServiceError>>,
    ttl: Duration,
    negative_ttl: Duration,
}

struct Entry {
    outcome: Result<LockedFlake, ServiceError>,
    at: Instant,
    /// A 40-hex tag: it cannot move.
    permanent: bool,
}

impl Revisions {
    /// The revisions of the tags of `flake` (the served flake reference).
    pub fn new(flake: &str, ttl: Duration, negative_ttl: Duration) -> Revisions {
        Revisions {
            flake: flake.to_owned(),
            entries: Mutex::new(LruCache::new(NonZeroUsize::new(TAGS_KEPT).expect("not zero"))),
            running: Flights::new(),
            ttl,
            negative_ttl,
        }
    }

    /// The revision last found for `tag`, and whether it is still fresh.
    pub fn peek(&self, tag: &Tag) -> Option<(LockedFlake, bool)> {
        let mut entries = self.entries.lock().unwrap();
        let entry = entries.get(tag.as_str())?;
        let fresh = entry.permanent || entry.at.elapsed() < self.ttl;
        entry.outcome.as_ref().ok().map(|locked| (locked.clone(), fresh))
    }

    /// The revision of `tag`: the one found lately, else asks Nix.
    pub fn get(&self, nix: &Nix, tag: &Tag) -> Result<LockedFlake, ServiceError> {
        if let Some(outcome) = self.fresh(tag) {
            return outcome;
        }
        self.look_up(nix, tag)
    }

    /// Asks Nix now, whatever is known: the new revision, and whether it
    /// moved (or was not known).
    pub fn refresh(&self, nix: &Nix, tag: &Tag) -> Result<(LockedFlake, bool), ServiceError> {
        let before = self.peek(tag).map(|(locked, _)| locked.revision);
        let locked = self.look_up(nix, tag)?;
        // Unknown before (a failed lookup): it may have moved meanwhile.
        let moved = before.as_ref() != Some(&locked.revision);
        Ok((locked, moved))
    }

    fn fresh(&self, tag: &Tag) -> Option<Result<LockedFlake, ServiceError>> {
        let mut entries = self.entries.lock().unwrap();
        let entry = entries.get(tag.as_str())?;
        let ttl = if entry.outcome.is_ok() { self.ttl } else { self.negative_ttl };
        (entry.permanent || entry.at.elapsed() < ttl).then(|| entry.outcome.clone())
    }

    fn look_up(&self, nix: &Nix, tag: &Tag) -> Result<LockedFlake, ServiceError> {
        let abandoned = Err(ServiceError::Internal("looking up the flake's revision was abandoned".into()));
        self.running.run(tag.to_string(), abandoned, || {
            let outcome = flakeref::for_tag(&self.flake, tag.as_str())
                .and_then(|flake| nix.lock(&flake))
                .map_err(|error| not_locked(error, tag));
            let lasting = outcome.as_ref().err().is_none_or(ServiceError::is_lasting);
            if lasting {
                let permanent = outcome.is_ok() && tag.is_revision();
                let entry = Entry { outcome: outcome.clone(), at: Instant::now(), permanent };
                self.entries.lock().unwrap().put(tag.to_string(), entry);
            }
            outcome
        })
    }
}

/// Why `tag` has no revision: an unknown ref, or a flake that cannot be read.
fn not_locked(error: NixError, tag: &Tag) -> ServiceError {
    match error {
        NixError::Failed { .. } | NixError::Timeout { .. } if tag.as_str() != "latest" => ServiceError::TagUnknown(
            format!("the served flake has no ref {tag}, or it cannot be read: {}", error.client_reason()),
        ),
        NixError::Failed { .. } | NixError::Timeout { .. } => ServiceError::Build {
            message: format!("cannot read the served flake: {}", error.client_reason()),
            build: None,
        },
        other => other.into(),
    }
}

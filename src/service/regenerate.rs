//! Making an evicted layer again, once however many clients ask for it at
//! the same time: one regeneration per blob, on a thread of its own under a
//! generation slot, writes the blob into the cache's temporary file and
//! publishes how much of it is there; every client reads from that file as
//! it grows (from the byte its range starts at), and the regeneration runs
//! to its end (and into the cache) even when all of them have left.
//!
//! A client waits at most `--answer-within` for the regeneration to start;
//! once it runs, bytes come at once. When the cache cannot hold the file
//! (a full disk), a client makes the rest of its range itself.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::{Service, ServiceError};
use crate::cache::CacheWriter;
use crate::digest::Digest;
use crate::image::layer::{self, LayerRecord};
use crate::metrics;

/// Bytes gathered before they are written and published.
const PUBLISH_BYTES: usize = 256 * 1024;

/// The regenerations under way, by blob digest.
#[derive(Default)]
pub struct Regenerations {
    running: Mutex<HashMap<Digest, Arc<Regeneration>>>,
}

/// One blob being made again.
pub struct Regeneration {
    pub record: LayerRecord,
    progress: Mutex<Progress>,
    changed: Condvar,
}

#[derive(Default)]
struct Progress {
    /// The file being written, for readers; `None` until the run has a slot.
    file: Option<Arc<File>>,
    /// Bytes of the blob in the file.
    written: u64,
    /// `Some` once it ended: `Err` says why it stopped short.
    outcome: Option<Result<(), Stop>>,
}

/// Why a regeneration stopped short.
#[derive(Debug, Clone)]
enum Stop {
    /// Every generation slot taken and the queue full.
    NoSlot,
    /// The cache could not keep the file (a full disk): readers make their bytes themselves.
    NoRoom,
    Failed(String),
}

impl From<io::Error> for Stop {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::StorageFull {
            Stop::NoRoom
        } else {
            Stop::Failed(error.to_string())
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::NoSlot => f.write_str("too many layers are being made"),
            Stop::NoRoom => f.write_str("the blob cache has no room for the layer"),
            Stop::Failed(error) => f.write_str(error),
        }
    }
}

impl Service {
    /// Joins the regeneration of `record`'s blob, starting it if none runs,
    /// and waits until it has started (or failed), at most `--answer-within`.
    /// `None` when the cache has no room for it: the client makes its bytes itself.
    pub(super) fn regeneration(&self, record: LayerRecord) -> Result<Option<Arc<Regeneration>>, ServiceError> {
        let regeneration = {
            let mut running = self.regenerations.running.lock().unwrap();
            match running.get(&record.digest) {
                Some(regeneration) => regeneration.clone(),
                None => {
                    let regeneration = Arc::new(Regeneration {
                        record,
                        progress: Mutex::new(Progress::default()),
                        changed: Condvar::new(),
                    });
                    running.insert(regeneration.record.digest.clone(), regeneration.clone());
                    self.spawn_regeneration(regeneration.clone());
                    regeneration
                }
            }
        };
        let deadline = self.config.policy.deadline();
        let mut progress = regeneration.progress.lock().unwrap();
        while progress.file.is_none() {
            match &progress.outcome {
                Some(Err(Stop::NoRoom)) => return Ok(None),
                Some(Err(Stop::NoSlot)) => return Err(ServiceError::TooManyBuilds),
                Some(Err(error)) => return Err(ServiceError::Internal(format!("making the layer again: {error}"))),
                _ => {}
            }
            progress = match deadline {
                None => regeneration.changed.wait(progress).unwrap(),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ServiceError::TooManyBuilds);
                    }
                    regeneration.changed.wait_timeout(progress, left).unwrap().0
                }
            };
        }
        drop(progress);
        Ok(Some(regeneration))
    }

    fn spawn_regeneration(&self, regeneration: Arc<Regeneration>) {
        let this = self.this();
        let running = regeneration.clone();
        let spawned = std::thread::Builder::new().name("regenerate".into()).spawn(move || {
            let outcome = this.regenerate(&running);
            if let Err(error) = &outcome {
                log::warn!("making layer {} again failed: {error}", running.record.digest);
            }
            this.regenerations.running.lock().unwrap().remove(&running.record.digest);
            running.end(outcome);
        });
        if let Err(error) = spawned {
            self.regenerations.running.lock().unwrap().remove(&regeneration.record.digest);
            regeneration.end(Err(Stop::Failed(format!("cannot start a thread: {error}"))));
        }
    }

    /// The run: a slot, the temporary file, the blob into it, then into the cache.
    fn regenerate(&self, regeneration: &Regeneration) -> Result<(), Stop> {
        let record = &regeneration.record;
        let Some(_slot) = self.generation.acquire(None) else { return Err(Stop::NoSlot) };
        let started = Instant::now();
        let cache = self.blobs.writer();
        let file = match cache.path().map(File::open) {
            Some(Ok(file)) => Some(Arc::new(file)),
            _ => None,
        };
        let Some(file) = file else { return Err(Stop::NoRoom) };
        regeneration.update(|progress| progress.file = Some(file));
        let publisher = Publisher { cache, pending: Vec::with_capacity(PUBLISH_BYTES), regeneration };
        let (made, mut publisher) = layer::generate(&record.source, record.compression, publisher)?;
        publisher.publish()?;
        if made.digest != record.digest {
            // The client checks the digest too; keeping the bytes would serve them again.
            log::error!("layer {} came out as {} when made again; not caching it", record.digest, made.digest);
            return Err(Stop::Failed("the layer made again does not match its digest".into()));
        }
        let evicted = self.blobs.commit(publisher.cache, &made.digest, made.size);
        metrics::global().layers.generated("regenerated", made.size, started.elapsed());
        log::info!("regenerated layer {} ({} bytes) in {:.1?}", made.digest, made.size, started.elapsed());
        self.after_eviction(&evicted);
        Ok(())
    }

    /// Writes bytes `start..end` of the blob to `out` as the regeneration
    /// makes them. The blob's last byte goes out only once the whole checked
    /// out and is cached: a client never gets all of a blob that is wrong,
    /// and one that got all of it finds it cached.
    pub(super) fn follow(
        &self,
        regeneration: &Regeneration,
        start: u64,
        end: u64,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let size = regeneration.record.size;
        let held_back = end.min(size.saturating_sub(1)).max(start);
        let at = self.copy_as_written(regeneration, start, held_back, out)?;
        if at < held_back {
            // It stopped short of our range: the cache could not hold it.
            return self.generate_range(&regeneration.record, at, end, out);
        }
        if held_back == end {
            return Ok(());
        }
        let mut progress = regeneration.progress.lock().unwrap();
        while progress.outcome.is_none() {
            progress = regeneration.changed.wait(progress).unwrap();
        }
        match progress.outcome.clone().expect("ended") {
            Ok(()) => {
                drop(progress);
                self.copy_as_written(regeneration, held_back, end, out).map(drop)
            }
            Err(Stop::NoRoom) => {
                drop(progress);
                self.generate_range(&regeneration.record, held_back, end, out)
            }
            Err(error) => Err(io::Error::other(format!("the layer made again is not right: {error}"))),
        }
    }

    /// Copies `start..end` from the regeneration's file as it is written;
    /// where it got to (short of `end` if the regeneration stopped short).
    fn copy_as_written(
        &self,
        regeneration: &Regeneration,
        start: u64,
        end: u64,
        out: &mut dyn Write,
    ) -> io::Result<u64> {
        let mut at = start;
        let mut buffer = vec![0u8; PUBLISH_BYTES];
        while at < end {
            let (file, available) = {
                let mut progress = regeneration.progress.lock().unwrap();
                while progress.written <= at && progress.outcome.is_none() {
                    progress = regeneration.changed.wait(progress).unwrap();
                }
                if progress.written <= at {
                    return Ok(at);
                }
                (progress.file.clone().expect("written implies a file"), progress.written.min(end))
            };
            while at < available {
                let want = buffer.len().min((available - at) as usize);
                let read = file.read_at(&mut buffer[..want], at)?;
                if read == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the regenerated file is short"));
                }
                out.write_all(&buffer[..read])?;
                at += read as u64;
            }
        }
        Ok(at)
    }

    /// Makes `start..end` of a blob for one client alone, without caching it
    /// (when the cache cannot hold a file); under a generation slot.
    pub(super) fn generate_range(
        &self,
        record: &LayerRecord,
        start: u64,
        end: u64,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let _slot = self.generation.acquire(None).ok_or_else(|| io::Error::other(Stop::NoSlot.to_string()))?;
        let started = Instant::now();
        let window = super::blob::Window { out, position: 0, start, end };
        let (made, _) = layer::generate(&record.source, record.compression, window)?;
        metrics::global().layers.generated("uncached", made.size, started.elapsed());
        if made.digest != record.digest {
            log::error!("layer {} came out as {} when made again", record.digest, made.digest);
            return Err(io::Error::other("the layer made again does not match its digest"));
        }
        Ok(())
    }
}

impl Regeneration {
    fn update(&self, change: impl FnOnce(&mut Progress)) {
        change(&mut self.progress.lock().unwrap());
        self.changed.notify_all();
    }

    fn end(&self, outcome: Result<(), Stop>) {
        self.update(|progress| progress.outcome = Some(outcome));
    }
}

/// Gathers the blob and writes it to the cache file in large pieces, each
/// published to readers once it is in the file.
struct Publisher<'a> {
    cache: CacheWriter,
    pending: Vec<u8>,
    regeneration: &'a Regeneration,
}

impl Publisher<'_> {
    fn publish(&mut self) -> io::Result<()> {
        self.cache.write_all(&self.pending)?;
        self.cache.flush()?;
        if !self.cache.is_caching() {
            return Err(io::ErrorKind::StorageFull.into());
        }
        let added = self.pending.len() as u64;
        self.pending.clear();
        self.regeneration.update(|progress| progress.written += added);
        Ok(())
    }
}

impl Write for Publisher<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= PUBLISH_BYTES {
            self.publish()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

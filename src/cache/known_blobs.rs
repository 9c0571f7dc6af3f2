//! Blobs known to be in a remote store, and their sizes, for a short
//! while: a blob GET answered with a redirect to a presigned URL then asks
//! the bucket (a HEAD) once per [`KNOWN_FOR`] rather than every time.
//!
//! Bounded (an LRU of [`CAPACITY`]) and short-lived: an entry is trusted for
//! [`KNOWN_FOR`] or the redirect's expiry, whichever is shorter, counted
//! from the HEAD that found the blob (or the upload that stored it), never
//! renewed by use. Another replica or a bucket lifecycle rule may remove a
//! blob without this process hearing of it: until its entry expires,
//! clients are redirected to a gone object and get the bucket's 404; the
//! first GET after that asks the bucket again and makes the blob again.
//! What this process removes, or finds missing, is forgotten at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::digest::Digest;

/// How long a blob found in the store is believed to stay there at most.
pub const KNOWN_FOR: Duration = Duration::from_secs(60);
/// Blobs remembered (a digest, a size and an instant each: a few hundred KiB).
const CAPACITY: usize = 4096;

pub struct KnownBlobs {
    /// Digest → (size, when the store was found to hold it); none kept for
    /// a local store, which has no redirects to ask for them.
    entries: Option<Mutex<LruCache<Digest, (u64, Instant)>>>,
}

impl KnownBlobs {
    /// The record for a store that is `remote` (whose blobs may be
    /// redirected to); for a local one it keeps and knows nothing.
    pub fn new(remote: bool) -> Self {
        let entries = remote.then(|| Mutex::new(LruCache::new(CAPACITY.try_into().expect("not zero"))));
        KnownBlobs { entries }
    }

    /// The size of `digest` if the store held it less than `max_age` ago
    /// (and [`KNOWN_FOR`]).
    pub fn size(&self, digest: &Digest, max_age: Duration) -> Option<u64> {
        let mut entries = self.entries.as_ref()?.lock().unwrap();
        match entries.get(digest) {
            Some(&(size, found)) if found.elapsed() < max_age.min(KNOWN_FOR) => Some(size),
            Some(_) => {
                entries.pop(digest);
                None
            }
            None => None,
        }
    }

    /// Records that the store holds `digest` at `size` bytes now.
    pub fn found(&self, digest: &Digest, size: u64) {
        if let Some(entries) = &self.entries {
            entries.lock().unwrap().put(digest.clone(), (size, Instant::now()));
        }
    }

    /// Forgets `digest`: removed from the store, or found missing.
    pub fn forget(&self, digest: &Digest) {
        if let Some(entries) = &self.entries {
            entries.lock().unwrap().pop(digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_for_the_shorter_of_its_age_limits_and_forgotten_at_once() {
        let known = KnownBlobs::new(true);
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        assert_eq!(known.size(&a, KNOWN_FOR), None);
        known.found(&a, 10);
        known.found(&b, 20);
        assert_eq!(known.size(&a, Duration::from_secs(300)), Some(10));
        // A redirect expiring sooner than KNOWN_FOR shortens the trust.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(known.size(&a, Duration::from_millis(10)), None);
        assert_eq!(known.size(&a, KNOWN_FOR), None, "an expired entry stays gone");
        known.forget(&b);
        assert_eq!(known.size(&b, KNOWN_FOR), None);
    }

    #[test]
    fn bounded() {
        let known = KnownBlobs::new(true);
        for i in 0..=CAPACITY {
            known.found(&Digest::of(&i.to_le_bytes()), i as u64);
        }
        assert_eq!(known.entries.as_ref().unwrap().lock().unwrap().len(), CAPACITY);
        assert_eq!(known.size(&Digest::of(&0usize.to_le_bytes()), KNOWN_FOR), None, "the oldest went first");
        assert_eq!(known.size(&Digest::of(&CAPACITY.to_le_bytes()), KNOWN_FOR), Some(CAPACITY as u64));
    }

    #[test]
    fn a_local_store_keeps_nothing() {
        let known = KnownBlobs::new(false);
        let a = Digest::of(b"a");
        known.found(&a, 10);
        assert_eq!(known.size(&a, KNOWN_FOR), None);
        assert!(known.entries.is_none());
    }
}

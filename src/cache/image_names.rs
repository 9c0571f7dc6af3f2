//! Which image names each manifest, config and layer belongs to, kept in
//! the store for good (`names/<hex>`, one name a line, sealed like the other
//! records), so that access control can tell, after a restart too, whether
//! a client who may pull some images may fetch a digest: only if an image
//! it may pull holds it. A name once recorded stays: the client could pull
//! the digest under that name then. A file found damaged is removed (the
//! names come back when the tags are resolved again; until then the digest
//! is refused to those who may not pull everything); on a store that
//! cannot be written, the names are kept in memory and written when it
//! takes them ([`Unwritten`]). Replicas sharing a bucket add names to the same objects: one replica's
//! addition may overwrite another's made at the same moment (S3 has no
//! append); the lost name comes back when that replica resolves the tag again.

use std::sync::Mutex;

use crate::digest::Digest;
use crate::storage::Kind;

use super::Unwritten;

pub struct ImageNames {
    /// Names the store did not take yet (each list whole: those stored and the new).
    unwritten: Unwritten,
    /// One writer at a time: adding is read, then write.
    adding: Mutex<()>,
}

impl ImageNames {
    pub fn open(unwritten: Unwritten) -> ImageNames {
        ImageNames { unwritten, adding: Mutex::new(()) }
    }

    /// The image names (canonical) that hold `digest`, sorted.
    pub fn names(&self, digest: &Digest) -> Vec<String> {
        let unseal = |sealed: &[u8]| super::unseal(sealed).map(|text| String::from_utf8_lossy(text).into_owned());
        let text = self.unwritten.read_checked(Kind::Names, digest.hex(), unseal);
        let mut names: Vec<String> =
            text.unwrap_or_default().lines().filter(|line| !line.is_empty()).map(str::to_owned).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Records that the image `name` holds `digests`. A write that fails
    /// (a full disk, a read-only state directory, the store down) is kept
    /// in memory until the store takes it.
    pub fn add(&self, name: &str, digests: &[Digest]) {
        let _adding = self.adding.lock().unwrap();
        for digest in digests {
            let mut names = self.names(digest);
            if let Err(at) = names.binary_search_by(|n| n.as_str().cmp(name)) {
                names.insert(at, name.to_owned());
                let text: String = names.iter().map(|n| format!("{n}\n")).collect();
                self.unwritten.put(Kind::Names, digest.hex(), &super::seal(text.as_bytes()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn open(state: &Path) -> ImageNames {
        let storage = std::sync::Arc::new(crate::storage::FsStorage::open(state).unwrap());
        ImageNames::open(Unwritten::new(storage))
    }

    #[test]
    fn names_are_added_once_and_survive_reopen() {
        let scratch = crate::test_dir::TestDir::new();
        let state = scratch.path().join("state");
        let index = open(&state);
        let (shared, own) = (Digest::of(b"busybox layer"), Digest::of(b"hello layer"));
        assert!(index.names(&shared).is_empty());
        index.add("motd", std::slice::from_ref(&shared));
        index.add("hello", &[shared.clone(), own.clone()]);
        index.add("hello", &[shared.clone(), own.clone()]);
        drop(index);
        let index = open(&state);
        assert_eq!(index.names(&shared), ["hello", "motd"]);
        assert_eq!(index.names(&own), ["hello"]);
        // A damaged file is not believed: it is removed.
        let path = state.join("names").join(own.hex());
        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(index.names(&own).is_empty());
        assert!(!path.exists());
    }

    #[test]
    fn names_that_cannot_be_written_are_kept_in_memory() {
        let scratch = crate::test_dir::TestDir::new();
        let state = scratch.path().join("state");
        let index = open(&state);
        // Writes fail: the directory for temporary files is gone.
        fs::remove_dir_all(state.join("tmp")).unwrap();
        let layer = Digest::of(b"layer");
        index.add("hello", std::slice::from_ref(&layer));
        index.add("motd", std::slice::from_ref(&layer));
        assert_eq!(index.names(&layer), ["hello", "motd"]);
        // Writes work again: what was kept is written (nudged by the next write).
        fs::create_dir_all(state.join("tmp").join("metadata")).unwrap();
        index.add("hello", &[Digest::of(b"another layer")]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !state.join("names").join(layer.hex()).exists() {
            assert!(std::time::Instant::now() < deadline, "the names kept in memory were not written");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(open(&state).names(&layer), ["hello", "motd"]);
    }
}

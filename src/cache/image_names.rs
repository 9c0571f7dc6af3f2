//! Which image names each manifest, config and layer belongs to, kept on
//! disk for good (`names/<hex>`, one name a line), so that access control
//! can tell, after a restart too, whether a client who may pull some images
//! may fetch a digest: only if an image it may pull holds it. A name once
//! recorded stays: the client could pull the digest under that name then.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::digest::Digest;

pub struct ImageNames {
    dir: PathBuf,
    tmp_dir: PathBuf,
    /// One writer at a time: adding is read, then write.
    writing: Mutex<()>,
}

impl ImageNames {
    pub fn open(state_dir: &Path) -> io::Result<ImageNames> {
        let dir = state_dir.join("names");
        let tmp_dir = state_dir.join("tmp").join("names");
        fs::create_dir_all(&dir)?;
        let _ = fs::remove_dir_all(&tmp_dir);
        fs::create_dir_all(&tmp_dir)?;
        Ok(ImageNames { dir, tmp_dir, writing: Mutex::new(()) })
    }

    /// The image names (canonical) that hold `digest`, sorted.
    pub fn names(&self, digest: &Digest) -> Vec<String> {
        let text = fs::read_to_string(self.dir.join(digest.hex())).unwrap_or_default();
        text.lines().filter(|line| !line.is_empty()).map(str::to_owned).collect()
    }

    /// Records that the image `name` holds `digests`. A write that fails
    /// (a full disk) is logged; the next resolution of the name tries again.
    pub fn add(&self, name: &str, digests: &[Digest]) {
        let _writing = self.writing.lock().unwrap();
        for digest in digests {
            let mut names = self.names(digest);
            if let Err(at) = names.binary_search_by(|n| n.as_str().cmp(name)) {
                names.insert(at, name.to_owned());
                let text: String = names.iter().map(|n| format!("{n}\n")).collect();
                let path = self.dir.join(digest.hex());
                if let Err(err) = super::write_atomic(&self.tmp_dir, &path, text.as_bytes()) {
                    log::warn!("names: could not record that {name} holds {digest}: {err}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_added_once_and_survive_reopen() {
        let state = std::env::temp_dir().join(format!("flakeforge-names-{}", std::process::id()));
        let _ = fs::remove_dir_all(&state);
        let index = ImageNames::open(&state).unwrap();
        let (shared, own) = (Digest::of(b"busybox layer"), Digest::of(b"hello layer"));
        assert!(index.names(&shared).is_empty());
        index.add("motd", std::slice::from_ref(&shared));
        index.add("hello", &[shared.clone(), own.clone()]);
        index.add("hello", &[shared.clone(), own.clone()]);
        drop(index);
        let index = ImageNames::open(&state).unwrap();
        assert_eq!(index.names(&shared), ["hello", "motd"]);
        assert_eq!(index.names(&own), ["hello"]);
        fs::remove_dir_all(&state).unwrap();
    }
}

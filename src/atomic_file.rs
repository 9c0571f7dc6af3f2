//! Replacing a file whole, for the state directory's records and the TLS
//! files: a reader sees the old file or the new one, never a part, and a
//! write that fails leaves no temporary file behind.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `contents` to `temp` (created anew, with `mode` before any byte
/// is in it, then synced) and renames it to `path`. On failure `temp` is
/// removed.
pub fn replace(temp: &Path, path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_replacement_leaves_the_old_file_and_no_temporary_one() {
        let scratch = crate::test_dir::TestDir::new();
        let dir = scratch.path().join("dir");
        fs::create_dir_all(&dir).unwrap();
        let (temp, path) = (dir.join("temp"), dir.join("file"));
        replace(&temp, &path, b"old", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old");
        // The rename fails: no such directory.
        assert!(replace(&temp, &dir.join("missing/file"), b"new", 0o600).is_err());
        assert!(!temp.exists(), "the temporary file is removed");
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }
}

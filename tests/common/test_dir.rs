//! Scratch directories for tests (unit tests include this file too).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new() -> TestDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("flakeforge-test-{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TestDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    /// Detaches first whatever is still mounted inside (podman's storage,
    /// a daemon's data root, a test's tmpfs): a mount point cannot be removed.
    fn drop(&mut self) {
        unmount_under(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Detaches every mount under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // The fifth field is the mount point (no scratch path has a space to escape).
    let mut points: Vec<&str> =
        mountinfo.lines().filter_map(|line| line.split(' ').nth(4)).filter(|p| Path::new(p).starts_with(dir)).collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in points {
        let point = std::ffi::CString::new(point).unwrap();
        // SAFETY: a NUL-terminated path; a failure only leaves the mount in place.
        unsafe { libc::umount2(point.as_ptr(), libc::MNT_DETACH) };
    }
}

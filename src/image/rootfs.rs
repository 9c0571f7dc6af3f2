//! The layer flakeforge writes itself on top of a plain package's closure:
//! a merged tree of symlinks into the packages (as `symlinkJoin`), `/tmp`,
//! and a minimal `/etc/passwd` and `/etc/group`.

use std::io::{self, Write};
use std::path::PathBuf;

use super::Ownership;

pub fn write_rootfs_layer<W: Write>(out: W, packages: &[PathBuf], owner: &Ownership) -> io::Result<W> {
    let _ = (out, packages, owner);
    todo!()
}

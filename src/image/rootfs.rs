//! The layer flakeforge writes itself on top of a plain package's closure:
//! the packages merged at `/` as `symlinkJoin` merges them (directories made
//! real and merged, every file or symlink a symlink into the store, the
//! first package winning), `/tmp` (1777), and a minimal `/etc/passwd` and
//! `/etc/group` unless a package brings its own.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::tar::TarWriter;
use super::Ownership;

const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/var/empty:/bin/false\n";
const GROUP: &[u8] = b"root:x:0:\nnogroup:x:65534:\n";

/// The merged tree, sorted by name bytes (parents before children when written).
enum Node {
    Dir { mode: u32, children: BTreeMap<Vec<u8>, Node> },
    Link(Vec<u8>),
    File(&'static [u8]),
}

fn dir(mode: u32) -> Node {
    Node::Dir { mode, children: BTreeMap::new() }
}

/// Merges the directory `source` into `children` (lndir semantics: only real
/// directories are descended into; anything else becomes a symlink to it).
fn merge(children: &mut BTreeMap<Vec<u8>, Node>, source: &Path) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(source)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().as_bytes().to_vec();
        let path = entry.path();
        let is_dir = entry.file_type()?.is_dir();
        match children.get_mut(&name) {
            Some(Node::Dir { children: existing, .. }) if is_dir => merge(existing, &path)?,
            Some(_) => {} // the first package wins
            None if is_dir => {
                let mut node = dir(0o755);
                if let Node::Dir { children: sub, .. } = &mut node {
                    merge(sub, &path)?;
                }
                children.insert(name, node);
            }
            None => {
                children.insert(name, Node::Link(path.as_os_str().as_bytes().to_vec()));
            }
        }
    }
    Ok(())
}

fn write_node<W: Write>(tar: &mut TarWriter<W>, name: &[u8], node: &Node, owner: &Ownership) -> io::Result<()> {
    match node {
        Node::Dir { mode, children } => {
            tar.append_dir(name, *mode, owner)?;
            for (child, node) in children {
                let mut path = name.to_vec();
                path.push(b'/');
                path.extend_from_slice(child);
                write_node(tar, &path, node, owner)?;
            }
            Ok(())
        }
        Node::Link(target) => tar.append_symlink(name, target, owner),
        Node::File(content) => tar.append_file(name, 0o644, content.len() as u64, owner, &mut &content[..]),
    }
}

pub fn write_rootfs_layer<W: Write>(out: W, packages: &[PathBuf], owner: &Ownership) -> io::Result<W> {
    let mut root = BTreeMap::new();
    for package in packages {
        // A package whose output is a single file has nothing to merge.
        if fs::symlink_metadata(package)?.is_dir() {
            merge(&mut root, package)?;
        }
    }
    root.entry(b"tmp".to_vec()).or_insert_with(|| dir(0o1777));
    if let Node::Dir { children, .. } = root.entry(b"etc".to_vec()).or_insert_with(|| dir(0o755)) {
        children.entry(b"passwd".to_vec()).or_insert(Node::File(PASSWD));
        children.entry(b"group".to_vec()).or_insert(Node::File(GROUP));
    }
    let mut tar = TarWriter::new(out);
    for (name, node) in &root {
        write_node(&mut tar, name, node, owner)?;
    }
    tar.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn package(root: &Path, name: &str, files: &[&str]) -> PathBuf {
        let dir = root.join(name);
        for file in files {
            let path = dir.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, name).unwrap();
        }
        dir
    }

    #[test]
    fn merges_packages_like_symlink_join() {
        let scratch = crate::test_dir::TestDir::new();
        let root = scratch.path().join("root");
        let a = package(&root, "a", &["bin/a", "share/man/a.1", "bin/both"]);
        let b = package(&root, "b", &["bin/b", "bin/both", "etc/passwd", "share/doc/b"]);
        fs::write(root.join("single-file"), "x").unwrap();
        let bytes =
            write_rootfs_layer(Vec::new(), &[a.clone(), b.clone(), root.join("single-file")], &Ownership::default())
                .unwrap();

        let mut entries = BTreeMap::new();
        for entry in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().to_string();
            let link = entry.link_name().unwrap().map(|l| l.to_string_lossy().to_string());
            let mode = entry.header().mode().unwrap();
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            entries.insert(name, (link, mode, content));
        }
        let link = |name: &str| entries[name].0.clone().unwrap();
        assert_eq!(link("bin/a"), a.join("bin/a").to_string_lossy());
        assert_eq!(link("bin/b"), b.join("bin/b").to_string_lossy());
        assert_eq!(link("bin/both"), a.join("bin/both").to_string_lossy());
        assert_eq!(link("share/man/a.1"), a.join("share/man/a.1").to_string_lossy());
        assert_eq!(link("share/doc/b"), b.join("share/doc/b").to_string_lossy());
        assert_eq!(link("etc/passwd"), b.join("etc/passwd").to_string_lossy());
        assert_eq!(entries["etc/group"].2.as_bytes(), GROUP);
        assert_eq!(entries["tmp/"].1, 0o1777);
        assert_eq!(entries["bin/"].1, 0o755);
    }
}

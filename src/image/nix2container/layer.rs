//! One nix2container layer of store paths, archived as nix2container's
//! `TarPaths` archives it (Go's `archive/tar`), so that its digest is the
//! one the image JSON records: each path walked without following
//! symlinks; each file's path on disk rewritten by its path's `rewrite`
//! (a file rewritten to nothing is left out); everything merged into one
//! tree, written in name order, with the directories the names imply but
//! no path brought (`/`, `/nix`, `/nix/store`) as root-owned 0755; each
//! file with its mode on disk (0777 for symlinks), root:root, mtime 1,
//! unless a `perms` rule of its path whose regex matches the file's path
//! on disk sets mode, owner or group (later rules win).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use regex::bytes::Regex;
use serde::{Deserialize, Serialize};

use super::super::tar::{clean_path, Dialect, TarWriter};
use super::super::{InvalidImage, Ownership};

/// A store path of a layer, with the options nix2container applies to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerPath {
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<PathOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathOptions {
    #[serde(default)]
    pub rewrite: Rewrite,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub perms: Vec<Perm>,
}

/// `regex` (Go's RE2 syntax) replaced by `repl` (`$1` expands) in each file's path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rewrite {
    #[serde(default)]
    pub regex: String,
    #[serde(default)]
    pub repl: String,
}

/// For files whose path on disk matches `regex`: this owner and group (ids
/// always, names when given) and, when given, this octal `mode`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Perm {
    #[serde(default)]
    pub regex: String,
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub uid: u64,
    #[serde(default)]
    pub gid: u64,
    #[serde(default)]
    pub uname: String,
    #[serde(default)]
    pub gname: String,
}

/// A layer's options, their regexes compiled once.
struct Compiled {
    rewrite: Option<(Regex, Vec<u8>)>,
    perms: Vec<(Regex, Option<u32>, Perm)>,
}

fn compile(options: &PathOptions) -> Result<Compiled, InvalidImage> {
    let regex = |text: &str| {
        Regex::new(text).map_err(|e| InvalidImage(format!("the nix2container image has an unusable regex: {e}")))
    };
    let rewrite = match options.rewrite.regex.as_str() {
        "" => None,
        text => Some((regex(text)?, options.rewrite.repl.as_bytes().to_vec())),
    };
    let mut perms = Vec::new();
    for perm in &options.perms {
        let mode =
            match perm.mode.as_str() {
                "" => None,
                text => Some(u32::from_str_radix(text, 8).map_err(|_| {
                    InvalidImage(format!("the nix2container image has a mode {text:?} that is not octal"))
                })?),
            };
        perms.push((regex(&perm.regex)?, mode, perm.clone()));
    }
    Ok(Compiled { rewrite, perms })
}

/// A file of the layer: where it is on disk, what `lstat` said, whose options apply.
struct Source<'a> {
    path: PathBuf,
    meta: fs::Metadata,
    options: Option<(&'a PathOptions, &'a Compiled)>,
}

/// The layer's tree, by name in the tarball; children sorted by name bytes, as Go sorts them.
#[derive(Default)]
struct Node<'a> {
    source: Option<Source<'a>>,
    children: BTreeMap<Vec<u8>, Node<'a>>,
}

/// Writes the layer of `paths` to `out`.
pub fn write_layer<W: Write>(out: W, paths: &[LayerPath]) -> io::Result<W> {
    let compiled: Vec<Option<Compiled>> = paths
        .iter()
        .map(|p| p.options.as_ref().map(compile).transpose())
        .collect::<Result<_, _>>()
        .map_err(InvalidImage::into_io)?;
    let mut root = Node::default();
    for (layer_path, compiled) in paths.iter().zip(&compiled) {
        let options = layer_path.options.as_ref().zip(compiled.as_ref());
        walk(&layer_path.path, &mut |path, meta| add(&mut root, path, meta, options))?;
    }
    let mut tar = TarWriter::with_dialect(out, Dialect::GoArchiveTar);
    for (name, node) in &root.children {
        let top = if name.is_empty() { b"/".to_vec() } else { clean_path(name) };
        write_node(&mut tar, &top, node)?;
    }
    tar.finish()
}

/// Go's `filepath.Walk`: the path, then (for a directory) each child in name order.
fn walk(path: &Path, visit: &mut dyn FnMut(&Path, fs::Metadata) -> io::Result<()>) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    let is_dir = meta.is_dir();
    visit(path, meta)?;
    if is_dir {
        let mut names: Vec<_> = fs::read_dir(path)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            walk(&path.join(name), visit)?;
        }
    }
    Ok(())
}

/// `addFileToGraph`: the file at its rewritten name; a name brought twice
/// must be the same kind of file (and size, for regular files) with the same perms.
fn add<'a>(
    root: &mut Node<'a>,
    path: &Path,
    meta: fs::Metadata,
    options: Option<(&'a PathOptions, &'a Compiled)>,
) -> io::Result<()> {
    let on_disk = path.as_os_str().as_bytes();
    let name = match options.and_then(|(_, c)| c.rewrite.as_ref()) {
        Some((regex, repl)) => regex.replace_all(on_disk, repl.as_slice()).into_owned(),
        None => on_disk.to_vec(),
    };
    if name.is_empty() {
        return Ok(());
    }
    let cleaned = clean_path(&name);
    let parts: Vec<&[u8]> = if cleaned == b"/" { vec![b""] } else { cleaned.split(|&b| b == b'/').collect() };
    let mut node = root;
    for part in parts {
        node = node.children.entry(part.to_vec()).or_default();
    }
    let conflict = |what: &str| {
        let shown = String::from_utf8_lossy(&cleaned);
        InvalidImage(format!("nix2container layer: {shown} is brought twice with different {what}")).into_io()
    };
    if let Some(existing) = &node.source {
        let mode = |m: &fs::Metadata| (m.file_type().is_dir(), m.file_type().is_symlink(), m.permissions().mode());
        if mode(&existing.meta) != mode(&meta) {
            return Err(conflict("modes"));
        }
        if meta.is_file() && existing.meta.len() != meta.len() {
            return Err(conflict("sizes"));
        }
        if let Some((previous, _)) = existing.options {
            if options.map(|(o, _)| &o.perms) != Some(&previous.perms) {
                return Err(conflict("perms"));
            }
        }
    }
    node.source = Some(Source { path: path.to_path_buf(), meta, options });
    Ok(())
}

fn write_node<W: Write>(tar: &mut TarWriter<W>, name: &[u8], node: &Node) -> io::Result<()> {
    match &node.source {
        // A directory only implied by the names below it (`createDirectory`).
        None => tar.append_dir(name, 0o755, &root_owner())?,
        Some(source) => write_file(tar, name, source)?,
    }
    for (child, node) in &node.children {
        let mut path = name.to_vec();
        path.push(b'/');
        path.extend_from_slice(child);
        write_node(tar, &clean_path(&path), node)?;
    }
    Ok(())
}

fn root_owner() -> Ownership {
    Ownership { mtime: 1, uid: 0, gid: 0, uname: "root".into(), gname: "root".into() }
}

/// `appendFileToTar`.
fn write_file<W: Write>(tar: &mut TarWriter<W>, name: &[u8], source: &Source) -> io::Result<()> {
    let file_type = source.meta.file_type();
    let mut mode = if file_type.is_symlink() { 0o777 } else { source.meta.permissions().mode() & 0o7777 };
    let mut owner = root_owner();
    if let Some((_, compiled)) = source.options {
        for (regex, perm_mode, perm) in &compiled.perms {
            if regex.is_match(source.path.as_os_str().as_bytes()) {
                (owner.uid, owner.gid) = (perm.uid, perm.gid);
                if !perm.uname.is_empty() {
                    owner.uname.clone_from(&perm.uname);
                }
                if !perm.gname.is_empty() {
                    owner.gname.clone_from(&perm.gname);
                }
                if let Some(perm_mode) = perm_mode {
                    mode = *perm_mode;
                }
            }
        }
    }
    if file_type.is_symlink() {
        let target = fs::read_link(&source.path)?;
        tar.append_symlink_with_mode(name, target.as_os_str().as_bytes(), mode, &owner)
    } else if file_type.is_dir() {
        tar.append_dir(name, mode, &owner)
    } else if file_type.is_file() {
        tar.append_file(name, mode, source.meta.len(), &owner, &mut File::open(&source.path)?)
    } else {
        let shown = String::from_utf8_lossy(name);
        Err(InvalidImage(format!("nix2container layer: {shown} is not a file, directory or symlink")).into_io())
    }
}

//! Layer tarballs are byte for byte those of the tools flakeforge stands in
//! for: nixpkgs' `stream_layered_image.py` and nix2container.
//!
//! The expected digests were computed once, by hand, by running the
//! script's `archive_paths_to` (CPython 3.11's `tarfile`, which writes
//! headers as the Python nixpkgs uses does) over this fixture placed at the
//! store paths named below, after the same mode normalisation this test
//! does (git keeps only the executable bit, and the umask varies). The test
//! writes the same trees from a temporary copy under those archive names.
//!
//! For nix2container, by running its own `TarPaths` (`nix/tar.go`,
//! `nix/graph.go`, `nix/utils.go` of nlewo/nix2container at 20d3395, built
//! with Go 1.23) over the fixture with a few more entries (a symlink to a
//! 120-byte target, a 60-byte directory name), with the options below: the
//! rewrites move the temporary copy to those store paths (or to `/`), so the
//! digests do not depend on where the copy is. Its config blob likewise:
//! `fixtures/nix2container/image.json` is an image JSON as its `image`
//! command writes it (Go's `MarshalIndent` of its `types.Image`), and
//! `config.json` what its `GetConfigBlob` makes of it (image-spec v1.1.1).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flakeforge::digest::HashingWriter;
use flakeforge::image::nix2container::layer::{write_layer, LayerPath};
use flakeforge::image::nix2container::recipe;
use flakeforge::image::tar::TarWriter;
use flakeforge::image::Ownership;

#[path = "common/test_dir.rs"]
mod test_dir;
use test_dir::TestDir;

const TREE: &str = "/nix/store/00000000000000000000000000000000-golden-tree";
const SINGLE: &str = "/nix/store/11111111111111111111111111111111-golden-single";

struct Fixture {
    /// Inside `scratch`, removed with it.
    dir: PathBuf,
    _scratch: TestDir,
}

impl Fixture {
    /// The fixture copied, with modes normalised, an empty directory and a hardlink added.
    fn new(name: &str) -> Fixture {
        let scratch = TestDir::new();
        let dir = scratch.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden");
        copy_tree(&source.join("tree"), &dir.join("tree"));
        fs::copy(source.join("single"), dir.join("single")).unwrap();
        fs::set_permissions(dir.join("single"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::create_dir(dir.join("tree/empty")).unwrap();
        fs::set_permissions(dir.join("tree/empty"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::hard_link(dir.join("tree/a/b"), dir.join("tree/a/hardlink")).unwrap();
        Fixture { dir, _scratch: scratch }
    }

    fn layer(&self, paths: &[(&str, &str)], owner: &Ownership) -> (String, u64) {
        let mut tar = TarWriter::new(HashingWriter::new(std::io::sink()));
        tar.append_dir(b"/nix", 0o755, owner).unwrap();
        tar.append_dir(b"/nix/store", 0o755, owner).unwrap();
        for (local, archive_name) in paths {
            tar.append_tree_as(&self.dir.join(local), archive_name.as_bytes(), owner).unwrap();
        }
        let (digest, size, _) = tar.finish().unwrap().finish();
        (digest.hex().to_string(), size)
    }
}

impl Fixture {
    /// What the nix2container cases add: a long symlink target, a name that fits ustar's prefix field.
    fn with_more_entries(self) -> Fixture {
        std::os::unix::fs::symlink("t".repeat(120), self.dir.join("tree/link-long")).unwrap();
        let mid = self.dir.join("tree").join("m".repeat(60));
        fs::create_dir(&mid).unwrap();
        fs::set_permissions(&mid, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(mid.join("x"), "mid").unwrap();
        fs::set_permissions(mid.join("x"), fs::Permissions::from_mode(0o644)).unwrap();
        self
    }

    /// The nix2container layer of `paths` (JSON, `@DIR@` standing for the copy).
    fn nix2container_layer(&self, paths: &str) -> (String, u64) {
        let paths: Vec<LayerPath> = serde_json::from_str(&paths.replace("@DIR@", self.dir.to_str().unwrap())).unwrap();
        let (digest, size, _) = write_layer(HashingWriter::new(std::io::sink()), &paths).unwrap().finish();
        (digest.hex().to_string(), size)
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&source).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&source, &target);
        } else {
            fs::copy(&source, &target).unwrap();
            let executable = fs::metadata(&source).unwrap().permissions().mode() & 0o111 != 0;
            fs::set_permissions(&target, fs::Permissions::from_mode(if executable { 0o755 } else { 0o644 })).unwrap();
        }
    }
}

fn root() -> Ownership {
    Ownership { mtime: 1, uid: 0, gid: 0, uname: "root".into(), gname: "root".into() }
}

#[test]
fn one_tree_as_root() {
    let fixture = Fixture::new("root");
    assert_eq!(
        fixture.layer(&[("tree", TREE)], &root()),
        ("9030ff0a11321e53e5d1141ba66dd27ac1a7dbd5cf85eb9efa5956fbad7c49f5".to_string(), 430080)
    );
}

#[test]
fn two_paths_with_another_owner_and_time() {
    let fixture = Fixture::new("user");
    let owner = Ownership { mtime: 1_700_000_000, uid: 1000, gid: 100, uname: "user".into(), gname: "users".into() };
    assert_eq!(
        fixture.layer(&[("tree", TREE), ("single", SINGLE)], &owner),
        ("b7500f7cbdcb51e52a598318c5ebce4f0f4ce3e5ee9d8430cd73e66d3952b253".to_string(), 430080)
    );
}

#[test]
fn a_store_path_that_is_a_file() {
    let fixture = Fixture::new("single");
    assert_eq!(
        fixture.layer(&[("single", SINGLE)], &root()),
        ("42e8ec7aa19d85a20a03a666977b710c39609fd869730b9bcfedaa8e7a62160a".to_string(), 10240)
    );
}

#[test]
fn nix2container_store_paths() {
    let fixture = Fixture::new("n2c-store").with_more_entries();
    let paths = format!(
        r#"[{{"path": "@DIR@/tree", "options": {{"rewrite": {{"regex": "^@DIR@/tree", "repl": "{TREE}"}}}}}}]"#
    );
    assert_eq!(
        fixture.nix2container_layer(&paths),
        ("e5d16b0aa66fd28bfa61d59258641058b33329d832be5fc614ab97cda5a79f3c".to_string(), 425472)
    );
}

#[test]
fn nix2container_perms_with_large_ids_and_long_names() {
    let fixture = Fixture::new("n2c-perms").with_more_entries();
    let paths = format!(
        r#"[{{"path": "@DIR@/tree", "options": {{"rewrite": {{"regex": "^@DIR@/tree", "repl": "{TREE}"}}, "perms": [
              {{"regex": "/bin", "mode": "0700", "uid": 1000, "gid": 100, "uname": "user", "gname": "users"}},
              {{"regex": "\\.txt$", "mode": "0600", "uid": 3000000, "gid": 0, "uname": "a-user-name-longer-than-thirty-two-bytes"}}]}}}},
            {{"path": "@DIR@/single", "options": {{"rewrite": {{"regex": "^@DIR@/single", "repl": "{SINGLE}"}}}}}}]"#
    );
    assert_eq!(
        fixture.nix2container_layer(&paths),
        ("102e5e2b630c4d4e32d7f6dbff6c11f49d27d05c41951111ddd90cbcb5fbbb52".to_string(), 427520)
    );
}

#[test]
fn nix2container_copy_to_root() {
    let fixture = Fixture::new("n2c-root").with_more_entries();
    let paths = r#"[{"path": "@DIR@/tree", "options": {"rewrite": {"regex": "^@DIR@/tree", "repl": ""}, "perms": [{"regex": ".*", "mode": "0755", "uid": 0, "gid": 0}]}},
                    {"path": "@DIR@/single", "options": {"rewrite": {"regex": "^@DIR@/single$", "repl": "/etc/single"}}}]"#;
    assert_eq!(
        fixture.nix2container_layer(paths),
        ("a8eebe4dd7367bc1f3c27fcec195b10ed7596aafecff5449fadc62ff9c636560".to_string(), 425472)
    );
}

#[test]
fn nix2container_config_blob() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nix2container");
    let image = recipe(&fs::read(fixtures.join("image.json")).unwrap(), "aarch64-linux").unwrap();
    assert_eq!(image.config.blob.unwrap(), fs::read(fixtures.join("config.json")).unwrap());
}

//! One source for the service's settings: nixos/service.json. The unit for
//! Debian-family hosts (contrib/systemd/flakeforge.service) is what
//! `flakeforge systemd-unit` renders from it, and the NixOS module's service
//! has exactly its settings (evaluated offline, without nixpkgs), with the
//! flags of `flakeforge serve` its options pass. The VM
//! tests (tests/vm_debian.rs) check a running service against it as well.

use std::path::Path;
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn flakeforge(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flakeforge")).args(args).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_committed_unit_is_what_systemd_unit_prints() {
    let committed = std::fs::read_to_string(Path::new(REPO).join("contrib/systemd/flakeforge.service")).unwrap();
    let (code, printed, stderr) = flakeforge(&["systemd-unit"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        committed == printed,
        "contrib/systemd/flakeforge.service differs from `flakeforge systemd-unit` (nixos/service.json changed?); \
         write it again: cargo run -q -- systemd-unit > contrib/systemd/flakeforge.service"
    );
}

/// Also the options that tune `flakeforge serve`: each passes its flag
/// when set and only then, with the binary's own default (from this
/// build's `serve --help`), and every flag of `serve` is an option's or
/// named as left to extraArgs.
#[test]
fn the_nixos_module_has_the_settings_of_service_json() {
    let (code, help, stderr) = flakeforge(&["serve", "--help"]);
    assert_eq!(code, 0, "{stderr}");
    let out = Command::new("nix-instantiate")
        .current_dir(REPO)
        .args(["--eval", "--strict", "--json", "nixos/check-service-settings.nix", "--argstr", "serveHelp", &help])
        .output()
        .expect("nix-instantiate (nix-bin) is needed: scripts/install-deps.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nixos/check-service-settings.nix: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "[]", "the NixOS module differs from nixos/service.json or from flakeforge serve");
}

#[test]
fn a_privileged_port_and_another_binary() {
    let (code, unit, stderr) = flakeforge(&["systemd-unit", "--privileged-port", "--binary", "/opt/ff/bin/flakeforge"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(unit.contains("\nExecStart=/opt/ff/bin/flakeforge serve "), "{unit}");
    assert!(unit.contains("\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n"), "{unit}");
    assert!(unit.contains("\nPrivateUsers=false\n") && !unit.contains("\nPrivateUsers=true\n"), "{unit}");

    let (code, unit, stderr) = flakeforge(&["systemd-unit", "--binary", "flakeforge"]);
    assert_ne!(code, 0);
    assert!(unit.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--binary must be an absolute path"), "{stderr}");
}

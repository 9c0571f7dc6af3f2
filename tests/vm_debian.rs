//! flakeforge.service under real systemd, in Debian guests that QEMU
//! emulates (no KVM needed): tests/vm/vmtest.py installs this build of
//! flakeforge with contrib/systemd/flakeforge.service in an x86_64
//! registry guest, pulls from it with podman and docker in a client guest,
//! and pulls the multi-arch image in an aarch64 guest. The guest images are
//! built by tests/vm/build-image.sh and cached in /var/cache/flakeforge-vm.
//! Takes minutes; its progress is printed as it goes.

use std::process::Command;

#[test]
fn the_service_in_debian_virtual_machines() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vm/vmtest.py");
    let status = Command::new("python3")
        .arg(script)
        .arg("--flakeforge")
        .arg(env!("CARGO_BIN_EXE_flakeforge"))
        .status()
        .expect("python3 is needed: scripts/install-deps.sh");
    assert!(status.success(), "the VM tests failed: tests/vm/vmtest.py printed why above (FAILED: ...)");
}

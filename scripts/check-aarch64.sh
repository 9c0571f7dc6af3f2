#!/usr/bin/env bash
# The aarch64 build, checked on this x86_64 machine by hand (not part of
# .ci/run: it needs Rust's aarch64 standard library, which comes from
# rustup's servers, not from the registries CI is sure to reach).
#  1. The library's unit tests, cross-built for aarch64 (ring's, zstd's and
#     libdeflate's C code with Debian's cross compiler), pass under
#     qemu-user as a Cortex-A72.
#  2. The digests run on the ARMv8 SHA-256 instructions (ring's hardware
#     block function), not portable software: the digest test runs again
#     with qemu listing the code it translates. A layer's digests are
#     hashed on one thread, so a software SHA-256 would bound how fast a
#     board makes any layer. qemu emulates the SHA instructions more slowly
#     than native software, so this checks which code runs, not how fast.
# Exits non-zero if either fails. Installs the aarch64 Rust target and
# gcc-aarch64-linux-gnu if they are missing.
# Usage: scripts/check-aarch64.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=aarch64-unknown-linux-gnu
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
command -v aarch64-linux-gnu-gcc >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
work=$(mktemp -d /var/tmp/flakeforge-aarch64.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
qemu="qemu-aarch64 -cpu cortex-a72 -L /usr/aarch64-linux-gnu"
lib_tests() { # runner, then test filter arguments
  local runner=$1; shift
  (cd "$root" && CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$runner" \
    cargo test -q --locked --target "$target" --target-dir "$root/target/aarch64" --lib -- "$@")
}
echo "1. the library's unit tests on aarch64 (qemu-user, Cortex-A72):"
lib_tests "$qemu"
echo "2. the SHA-256 code the digest test runs (a million bytes through the layer writer):"
lib_tests "$qemu -d in_asm -D $work/trace" digest::tests::hashes_in_pieces_as_in_one --exact
grep '^IN: ' "$work/trace" | sed 's/^IN: //' | grep -i 'sha256.*block\|sha256.*compress' | sort -u | sed 's/^/  /'
if grep -q '^IN: .*sha256_block_data_order_hw' "$work/trace" &&
  ! grep -q '^IN: .*sha256_block_data_order_nohw' "$work/trace"; then
  echo "aarch64: the unit tests pass; digests use the ARMv8 SHA-256 instructions"
else
  echo "aarch64: the digests do not use the ARMv8 SHA-256 instructions" >&2
  exit 1
fi

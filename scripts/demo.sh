#!/usr/bin/env bash
# Serves the bundled demo flake and pulls an image from it with podman.
# On a fresh Debian machine: installs what it needs, builds flakeforge, runs it
# on 127.0.0.1:5000, pulls and runs `hello`, then stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked

state=$(mktemp -d)
server=
trap '[ -z "$server" ] || { kill "$server"; wait "$server" || true; }; rm -rf "$state"' EXIT
# The VM tests' flake, which needs nothing but a static busybox for the
# host's system; copied out of this git work tree, where Nix would only see
# the files git tracks (and tools/ is not one).
cp -r vm-tests/test-flake "$state/demo"
mkdir -p "$state/demo/tools/$(uname -m)-linux"
cp /bin/busybox "$state/demo/tools/$(uname -m)-linux/busybox"
target/release/flakeforge serve --flake "$state/demo" --listen 127.0.0.1:5000 --no-tls \
  --state-dir "$state/flakeforge" &
server=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:5000/v2/ >/dev/null && break; sleep 0.2; done

cat > "$state/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
netns = "none"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
podman_() { CONTAINERS_CONF="$state/containers.conf" podman --root "$state/root" --runroot "$state/run" "$@"; }
podman_ pull --tls-verify=false 127.0.0.1:5000/hello
podman_ run --rm 127.0.0.1:5000/hello

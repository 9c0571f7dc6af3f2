#!/usr/bin/env bash
# Benchmarks flakeforge side by side with Debian's docker-registry (CNCF
# distribution) and `openssl dgst -sha256`, in one run on this machine:
#   1. cold layer generation (--compression none) vs openssl's SHA-256 throughput
#   2. warm pull with skopeo: flakeforge vs docker-registry serving the same image
#   3. peak RSS while 8 clients pull the image at once, both registries
#   4. 100 concurrent manifest requests for an image not built yet: how many `nix build`s
# Usage: bench/run.sh [SIZE_MIB (default 1024)] [PARTS (default 8)]
# Needs what scripts/install-deps.sh installs. Everything listens on 127.0.0.1.
set -euo pipefail
SIZE_MIB=${1:-1024}
PARTS=${2:-8}
FILES_PER_PART=4
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
echo "{\"parts\": $PARTS, \"filesPerPart\": $FILES_PER_PART, \"fileMiB\": $((SIZE_MIB / PARTS / FILES_PER_PART))}" > "$flake/params.json"
nix build --no-link "$flake#big" "$flake#big2"
closure=$(nix path-info --recursive "$flake#big")
files=$(find $closure -type f | sort)
bytes=$(cat $files | wc -c)
say "image content" "$((bytes / 1048576)) MiB in $PARTS store paths, $(nproc) cores"

# 1. Hashing throughput: openssl over the same bytes (page cache warm, best of 3).
best=999999
for _ in 1 2 3; do
  t0=$(now); openssl dgst -sha256 $files >/dev/null; t=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
  best=$(awk -v a="$best" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
done
openssl_time=$best
say "openssl dgst -sha256 (one core)" "$(mib_per_s "$bytes" "$openssl_time")"

start_ff() { # state-dir port [more flags]
  "$ff" serve --flake "$flake" --listen "127.0.0.1:$2" --no-tls --state-dir "$1" --compression none \
    --cache-size 100G --answer-within 0 "${@:3}" >>"$work/ff.log" 2>&1 &
  ff_pid=$!
  pids+=("$ff_pid")
  wait_http "http://127.0.0.1:$2/v2/"
}
stop_ff() { kill "$ff_pid"; wait "$ff_pid" 2>/dev/null || true; }

port=$(free_port)
start_ff "$work/ff-state" "$port" --tag-ttl 0 --no-stale
oci='Accept: application/vnd.oci.image.manifest.v1+json'
t0=$(now)
curl -sf -H "$oci" "http://127.0.0.1:$port/v2/big/manifests/latest" >/dev/null
cold=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
say "cold manifest (nix no-op build + all layers generated)" "$(printf '%.2f s, ' "$cold")$(mib_per_s "$bytes" "$cold")"
# The same image at a new revision of the flake (a comment more): the tag is
# resolved with Nix again (--tag-ttl 0, waited for: --no-stale) but nothing
# is built and no layer generated.
echo "# a new revision" >> "$flake/flake.nix"
t0=$(now)
curl -sf -H "$oci" "http://127.0.0.1:$port/v2/big/manifests/latest" >/dev/null
resolve=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
generation=$(awk -v c="$cold" -v r="$resolve" 'BEGIN { print c - r }')
say "  of which Nix (eval, no-op build, path-info)" "$(printf '%.2f s' "$resolve")"
say "  layer generation alone" "$(printf '%.2f s, ' "$generation")$(mib_per_s "$bytes" "$generation")"
say "  = share of openssl's throughput (whole request)" "$(awk -v o="$openssl_time" -v c="$cold" 'BEGIN { printf "%.0f%%", 100 * o / c }')"
say "  = share of openssl's throughput (generation alone)" "$(awk -v o="$openssl_time" -v c="$generation" 'BEGIN { printf "%.0f%%", 100 * o / c }')"

# 2. Warm pulls with skopeo: flakeforge, and docker-registry holding the same image.
reg_port=$(free_port)
mkdir -p "$work/registry"
cat >"$work/registry/config.yml" <<CONF
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $work/registry/data }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$reg_port }
CONF
docker-registry serve "$work/registry/config.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
pids+=("$reg_pid")
wait_http "http://127.0.0.1:$reg_port/v2/"
skopeo copy -q --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
  "docker://127.0.0.1:$port/big:latest" "docker://127.0.0.1:$reg_port/big:latest"

pull() { # registry-port destination
  rm -rf "$2"
  local t0; t0=$(now)
  skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$1/big:latest" "dir:$2"
  awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }'
}
# Moving tags resolved once a minute again (the default), as in normal use.
stop_ff
start_ff "$work/ff-state" "$port"
curl -sf -H "$oci" "http://127.0.0.1:$port/v2/big/manifests/latest" >/dev/null
ff_times=(); reg_times=()
for _ in 1 2 3 4 5; do
  ff_times+=("$(pull "$port" "$work/pull")")
  reg_times+=("$(pull "$reg_port" "$work/pull")")
done
rm -rf "$work/pull"
best_median() { printf '%s\n' "$@" | sort -g | awk '{ t[NR] = $1 } END { printf "%.2f %.2f", t[1], t[int((NR + 1) / 2)] }'; }
read -r ff_best ff_median <<<"$(best_median "${ff_times[@]}")"
read -r reg_best reg_median <<<"$(best_median "${reg_times[@]}")"
say "warm skopeo pull, flakeforge (best / median of 5)" "$ff_best s / $ff_median s, $(mib_per_s "$bytes" "$ff_median")"
say "warm skopeo pull, docker-registry (best / median of 5)" "$reg_best s / $reg_median s, $(mib_per_s "$bytes" "$reg_median")"

# 3. Peak RSS while 8 clients pull at once (each registry freshly started).
parallel_pulls() {
  local ps=()
  for i in 1 2 3 4 5 6 7 8; do
    skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$1/big:latest" "dir:$work/p$i" & ps+=($!)
  done
  for p in "${ps[@]}"; do wait "$p"; done
  rm -rf "$work"/p?
}
stop_ff
start_ff "$work/ff-state" "$port"
curl -sf -H "$oci" "http://127.0.0.1:$port/v2/big/manifests/latest" >/dev/null
parallel_pulls "$port"
say "peak RSS, 8 parallel pulls, flakeforge" "$(( $(peak_rss_kib "$ff_pid") / 1024 )) MiB"
kill "$reg_pid"; wait "$reg_pid" 2>/dev/null || true
docker-registry serve "$work/registry/config.yml" >>"$work/registry.log" 2>&1 &
reg_pid=$!
pids+=("$reg_pid")
wait_http "http://127.0.0.1:$reg_port/v2/"
parallel_pulls "$reg_port"
say "peak RSS, 8 parallel pulls, docker-registry" "$(( $(peak_rss_kib "$reg_pid") / 1024 )) MiB"

# 4. 100 concurrent requests for an image not built yet.
builds_before=$(grep -c 'nix build .*big2.*done' "$work/ff.log" || true)
codes=$(seq 100 | xargs -P 100 -I{} curl -s -o /dev/null -w '%{http_code}\n' -H "$oci" \
  "http://127.0.0.1:$port/v2/big2/manifests/latest" | sort | uniq -c | tr -s ' ' | tr '\n' ' ')
builds=$(( $(grep -c 'nix build .*big2.*done' "$work/ff.log" || true) - builds_before ))
say "100 concurrent requests for an unbuilt image: answers" "$codes"
say "  nix build runs for it" "$builds"

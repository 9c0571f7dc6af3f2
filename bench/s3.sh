#!/usr/bin/env bash
# Replicas sharing an S3 bucket (SeaweedFS on loopback, as installed by
# scripts/install-deps.sh): 8 clients pull a SIZE_MIB image at once
#   - redirected: from two replicas (4 clients each), every layer blob GET a
#     307 to a presigned URL that the client follows to the store;
#   - streamed: from one replica with --s3-redirect false (all 8 clients),
#     every layer through that replica;
# side by side, interleaved (redirected, streamed, redirected, ...), the
# median of RUNS rounds each. A client is curl following redirects, every
# blob's SHA-256 checked against its digest, as a registry client does.
# Usage: bench/s3.sh [SIZE_MIB (default 1024)] [RUNS (default 3)]
# Everything listens on 127.0.0.1.
set -euo pipefail
SIZE_MIB=${1:-1024}
RUNS=${2:-3}
PARTS=8
FILES_PER_PART=4
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
weed=/opt/flakeforge-test/seaweedfs/bin/weed
[ -x "$weed" ] || { echo "$weed is missing: run scripts/install-deps.sh" >&2; exit 1; }
echo "{\"parts\": $PARTS, \"filesPerPart\": $FILES_PER_PART, \"fileMiB\": $((SIZE_MIB / PARTS / FILES_PER_PART))}" >"$flake/params.json"
nix build --no-link "$flake#big"

# SeaweedFS with one identity (so signatures are checked), ports below the
# ephemeral range with their gRPC twins (+10000) free.
key=bench secret=bench-secret
cat >"$work/s3.json" <<JSON
{"identities": [{"name": "bench", "credentials": [{"accessKey": "$key", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "Write", "List"]}]}
JSON
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$key" "$secret" >"$work/credentials"
port_below() { python3 -c 'import random, socket
while True:
    p = random.randint(12000, 21999); ok = True
    for q in (p, p + 10000):
        s = socket.socket()
        try: s.bind(("127.0.0.1", q))
        except OSError: ok = False
        s.close()
    if ok: print(p); break'; }
master=$(port_below) volume=$(port_below) filer=$(port_below) s3=$(port_below)
mkdir -p "$work/weed"
"$weed" server -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$master" -volume.port="$volume" \
  -filer.port="$filer" -s3 -s3.port="$s3" -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$work/s3.json" -volume.minFreeSpace=1GiB \
  >"$work/weed.log" 2>&1 &
echo $! >"$work/weed.pid"
endpoint="http://127.0.0.1:$s3"
sign=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret")
for _ in $(seq 300); do curl -s -o /dev/null -X PUT "${sign[@]}" "$endpoint/bench" && break; sleep 0.2; done
for _ in $(seq 300); do
  curl -sf -o /dev/null -X PUT "${sign[@]}" --data ready "$endpoint/bench/ready" && break
  sleep 0.2
done

# Three replicas of one bucket: "streamed" builds and uploads first.
start_replica() { # NAME PORT FLAGS...
  local name=$1 port=$2
  shift 2
  "$ff" serve --flake "$flake" --listen "127.0.0.1:$port" --no-tls --state-dir "$work/$name" --compression none \
    --answer-within 0 --storage s3://bench/ff --s3-endpoint "$endpoint" --s3-credentials "$work/credentials" "$@" \
    >"$work/$name.log" 2>&1 &
  echo $! >"$work/$name.pid"
  wait_http "http://127.0.0.1:$port/v2/"
}
oci='Accept: application/vnd.oci.image.manifest.v1+json'
streamed=$(free_port)
start_replica streamed "$streamed" --s3-redirect false
t0=$(now)
manifest=$(curl -sf -H "$oci" "http://127.0.0.1:$streamed/v2/big/manifests/latest")
say "build, generate and upload (streamed replica)" "$(since "$t0") s"
mapfile -t layers < <(python3 -c 'import json, sys; print("\n".join(l["digest"] for l in json.load(sys.stdin)["layers"]))' <<<"$manifest")
bytes=$(python3 -c 'import json, sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))' <<<"$manifest")
say "image" "$((bytes / 1048576)) MiB in ${#layers[@]} layers, $(nproc) cores"
one=$(free_port)
start_replica one "$one"
two=$(free_port)
start_replica two "$two"
# Each replica hashes a streamed blob once after a start: not part of the rounds.
for l in "${layers[@]}"; do curl -sf "http://127.0.0.1:$streamed/v2/big/blobs/$l" >/dev/null; done

# One client: every layer, digest checked. pull PORT
pull() {
  local l
  for l in "${layers[@]}"; do
    [ "sha256:$(curl -sfL "http://127.0.0.1:$1/v2/big/blobs/$l" | sha256sum | cut -d' ' -f1)" = "$l" ] \
      || { echo "blob $l from port $1 does not match its digest" >&2; return 1; }
  done
}
# 8 clients at once; their ports as arguments, one per client.
round() {
  local t0 p client_pids=()
  t0=$(now)
  for p in "$@"; do pull "$p" & client_pids+=($!); done
  for p in "${client_pids[@]}"; do wait "$p"; done
  since "$t0"
}
redirected=() streamed_times=()
for _ in $(seq "$RUNS"); do
  redirected+=("$(round "$one" "$two" "$one" "$two" "$one" "$two" "$one" "$two")")
  streamed_times+=("$(round "$streamed" "$streamed" "$streamed" "$streamed" "$streamed" "$streamed" "$streamed" "$streamed")")
done
r=$(median "${redirected[@]}") s=$(median "${streamed_times[@]}")
total=$((bytes * 8))
say "8 clients, 2 replicas, 307 to presigned URLs (median of $RUNS)" "$r s, $(mib_per_s "$total" "$r") (runs: ${redirected[*]})"
say "8 clients, 1 replica streaming from the bucket (median of $RUNS)" "$s s, $(mib_per_s "$total" "$s") (runs: ${streamed_times[*]})"
say "redirected vs streamed" "$(awk -v a="$s" -v b="$r" 'BEGIN { printf "%.2fx", a / b }')"
for name in one two; do
  builds=$(grep -c "nix build " "$work/$name.log" || true)
  generated=$(grep -c "generated layer" "$work/$name.log" || true)
  say "replica $name: nix builds, layers generated" "$builds, $generated"
done
say "peak RSS: streaming replica / a redirecting one" \
  "$(($(peak_rss_kib "$(cat "$work/streamed.pid")") / 1024)) MiB / $(($(peak_rss_kib "$(cat "$work/one.pid")") / 1024)) MiB"

#!/usr/bin/env bash
# Cold layer generation over a realistic closure: the machine's own files
# (/usr/lib/<multiarch>, /usr/share, /usr/lib/gcc and, for `large`, the
# Python standard library) copied into the Nix store, one store path each.
# Side by side, interleaved (flakeforge, reference, flakeforge, ...) so both
# see the same load, each the median of RUNS runs from a fresh state:
#   none vs `tar --sort=name | openssl dgst -sha256` (from the same files)
#   none+file: none again, vs the same work done by the tools: tar from the
#   files, written to a file (flakeforge stores the blob) and hashed
#   gzip vs `pigz -6 -p CORES`, zstd vs `zstd -3 -T CORES` (over the same
#   bytes as one tarball, read from the page cache, written to a file)
#   zstd+sha: zstd again, vs the same work done by the tools: tar from the
#   files, SHA-256 of the tarball (diff_id) and of the zstd output (digest)
# with compressed sizes, the cores flakeforge kept busy, its peak RSS and
# its per-layer times (the manifest waits for the slowest layer).
# Usage: bench/closure.sh [small|large (default)] [RUNS (default 3)] [LEVEL...]
#   LEVEL: more --compression values to time once each, e.g. gzip:1 zstd:19
#   MODES="none none+file gzip zstd zstd+sha" (the default) picks the comparisons.
# Needs what scripts/install-deps.sh installs. Everything listens on 127.0.0.1.
set -euo pipefail
# A failed run inside $(...) must stop the benchmark, not leave a stale figure.
shopt -s inherit_errexit
SIZE=${1:-large}
RUNS=${2:-3}
LEVELS=("${@:3}")
read -r -a MODES <<<"${MODES:-none none+file gzip zstd zstd+sha}"
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
cores=$(nproc)

multiarch=$(gcc -dumpmachine 2>/dev/null || echo "$(uname -m)-linux-gnu")
dirs=("lib-$multiarch:/usr/lib/$multiarch" "share:/usr/share" "lib-gcc:/usr/lib/gcc")
if [ "$SIZE" = large ]; then
  stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
  dirs+=("python-stdlib:$stdlib")
fi
python3 - "${dirs[@]}" >"$flake/params.json" <<'PY'
import json, sys
print(json.dumps({"corpus": [dict(zip(("name", "path"), d.split(":", 1))) for d in sys.argv[1:]]}))
PY
echo "building the corpus (copied into the store once; later runs reuse it)" >&2
nix build --no-link "$flake#closure"
top=$(nix path-info "$flake#closure")
mapfile -t paths < <(nix path-info --recursive "$flake#closure" | grep -vx "$top")
rel=("${paths[@]#/}")
# Hardlinks as whole files, as in flakeforge's layers (and nixpkgs'): the same bytes.
tarball="$work/closure.tar"
tar --sort=name --hard-dereference -cf "$tarball" -C / "${rel[@]}"
bytes=$(stat -c %s "$tarball")
files=$(find "${paths[@]}" | wc -l)
say "corpus ($SIZE)" "$((bytes / 1048576)) MiB, $files files, ${#paths[@]} store paths, $cores cores"
for p in "${paths[@]}"; do say "  $(basename "$p" | cut -d- -f2-)" "$(du -s --apparent-size -m "$p" | cut -f1) MiB"; done

oci='Accept: application/vnd.oci.image.manifest.v1+json'
# Both sides read from the page cache: whatever other work on the machine pushed out is read back first.
warm_files() { find "${paths[@]}" -type f -print0 | xargs -0 cat >/dev/null; }
# One cold generation from a fresh state. Prints: generation seconds, whole
# request seconds, CPU seconds of flakeforge, peak RSS KiB, blob bytes.
ff_run() { # compression
  local state="$work/state" port t0 cold cpu rss resolve ff_pid
  rm -rf "$state"
  warm_files
  sync
  port=$(free_port)
  "$ff" serve --flake "$flake" --listen "127.0.0.1:$port" --no-tls --state-dir "$state" --compression "$1" \
    --cache-size 100G --tag-ttl 0 --no-stale --answer-within 0 >"$work/ff.log" 2>&1 &
  ff_pid=$!
  echo "$ff_pid" >"$work/server.pid"  # this runs in a subshell: cleanup finds it here
  wait_http "http://127.0.0.1:$port/v2/"
  rm -f "$work/manifest.json"
  t0=$(now)
  # --answer-within 0: the request waits for the whole generation, however long.
  curl -sf -H "$oci" -o "$work/manifest.json" "http://127.0.0.1:$port/v2/closure/manifests/latest"
  cold=$(since "$t0")
  cpu=$(cpu_seconds "$ff_pid")
  rss=$(peak_rss_kib "$ff_pid")
  # The same image at a new revision of the flake (a comment more): Nix
  # resolves the tag again (--tag-ttl 0, waited for: --no-stale) and builds
  # nothing; no layer is generated. Its time is the Nix part of the cold one.
  echo "# revision $(now)" >>"$flake/flake.nix"
  t0=$(now)
  curl -sf -H "$oci" -o /dev/null "http://127.0.0.1:$port/v2/closure/manifests/latest"
  resolve=$(since "$t0")
  kill "$ff_pid"; wait "$ff_pid" 2>/dev/null || true
  rm -f "$work/server.pid"
  rm -rf "$state"
  local size
  size=$(python3 -c 'import json, sys; print(sum(l["size"] for l in json.load(open(sys.argv[1]))["layers"]))' "$work/manifest.json")
  awk -v c="$cold" -v r="$resolve" -v cpu="$cpu" -v rss="$rss" -v s="$size" 'BEGIN { print c - r, c, cpu, rss, s }'
}
# A reference command under /usr/bin/time. Prints: seconds, peak RSS KiB, CPU seconds, output bytes.
ref_run() { # output-file command...
  local out=$1; shift
  cat "$tarball" >/dev/null
  sync
  /usr/bin/time -f '%e %M %U %S' -o "$work/time" "$@"
  local size=0
  if [ -f "$out" ]; then size=$(stat -c %s "$out"); rm -f "$out"; fi
  awk -v s="$size" '{ print $1, $2, $3 + $4, s }' "$work/time"
}
# The references run in `bash -c` under /usr/bin/time: functions and values are exported.
# tar reads the store paths itself, from the same files flakeforge reads.
tar_closure() { tar --sort=name --hard-dereference -cf - -C / $rel_list; }
tar_sha256() { tar_closure | openssl dgst -sha256 >/dev/null; }
# What a registry does for an uncompressed layer, done by the tools: tar, store the tarball, hash it.
tar_file_sha256() { tar_closure | tee "$work/ref.out" | openssl dgst -sha256 >/dev/null; }
pigz_ref() { pigz -6 -p "$cores" <"$tarball" >"$work/ref.out"; }
zstd_ref() { zstd -q -3 -T"$cores" <"$tarball" >"$work/ref.out"; }
# What a registry does for a zstd layer, done by the tools: tar, hash the tarball, compress, hash the blob.
# The tarball's hash reads a FIFO in the background, waited for: its time counts.
zstd_sha_ref() {
  rm -f "$work/tar.fifo" && mkfifo "$work/tar.fifo"
  openssl dgst -sha256 <"$work/tar.fifo" >/dev/null &
  tar_closure | tee "$work/tar.fifo" |
    zstd -q -3 -T"$cores" | tee "$work/ref.out" | openssl dgst -sha256 >/dev/null
  wait
}
export -f tar_closure tar_sha256 tar_file_sha256 pigz_ref zstd_ref zstd_sha_ref
export tarball work cores
export rel_list="${rel[*]}"

declare -A ff_gen ff_busy ff_cpu ff_rss ff_size ref_time ref_cpu ref_rss ref_size
compare() { # label compression reference-function
  local gens=() busy=() cpus=() rsss=() sizes=() refs=() ref_cpus=() ref_rsss=() ref_sizes=() i
  for ((i = 1; i <= RUNS; i++)); do
    result=$(ff_run "$2")
    read -r gen _ cpu rss size <<<"$result"
    gens+=("$gen"); cpus+=("$cpu"); busy+=("$(awk -v c="$cpu" -v g="$gen" 'BEGIN { print c / g }')")
    rsss+=("$rss"); sizes+=("$size")
    cp "$work/ff.log" "$work/ff-$1.log"
    result=$(ref_run "$work/ref.out" bash -c "$3")
    read -r t r c s <<<"$result"
    refs+=("$t"); ref_cpus+=("$c"); ref_rsss+=("$r"); ref_sizes+=("$s")
    say "  run $i: $1" "$(printf 'flakeforge %.2f s (%.1f CPU s), reference %.2f s (%.1f CPU s)' "$gen" "$cpu" "$t" "$c")"
  done
  ff_gen[$1]=$(median "${gens[@]}"); ff_busy[$1]=$(median "${busy[@]}"); ff_cpu[$1]=$(median "${cpus[@]}")
  ff_rss[$1]=$(median "${rsss[@]}"); ff_size[$1]=$(median "${sizes[@]}")
  ref_time[$1]=$(median "${refs[@]}"); ref_cpu[$1]=$(median "${ref_cpus[@]}"); ref_rss[$1]=$(median "${ref_rsss[@]}")
  ref_size[$1]=$(median "${ref_sizes[@]}")
}
declare -A reference=([none]=tar_sha256 [none+file]=tar_file_sha256 [gzip]=pigz_ref [zstd]=zstd_ref [zstd+sha]=zstd_sha_ref)
declare -A compression=([none]=none [none+file]=none [gzip]=gzip [zstd]=zstd [zstd+sha]=zstd)
# One untimed round first, so that no measured run pays for writing the
# corpus and the tarball just before it.
ff_run none >/dev/null
ref_run "$work/ref.out" bash -c tar_sha256 >/dev/null
for mode in "${MODES[@]}"; do compare "$mode" "${compression[$mode]}" "${reference[$mode]}"; done

mib=$((bytes / 1048576))
echo
echo "| $mib MiB closure, $cores cores, median of $RUNS | flakeforge | reference over the same bytes | speed-up (CPU time) |"
echo "|---|---|---|---|"
# flakeforge's ratio is over its own tarball (the none run's layers) when that was measured.
ff_bytes=${ff_size[none]:-$bytes}
row() { # label reference-name
  [ -n "${ff_gen[$1]:-}" ] || return 0
  local shown="\`--compression ${compression[$1]}\`"
  [[ "$1" != *+* ]] || shown="$shown (again)"
  local ratio_ff="" ratio_ref=""
  if [ "${compression[$1]}" != none ]; then
    ratio_ff=$(awk -v b="$ff_bytes" -v s="${ff_size[$1]}" 'BEGIN { printf ", ratio %.2f", b / s }')
    ratio_ref=$(awk -v b="$bytes" -v s="${ref_size[$1]}" 'BEGIN { printf ", ratio %.2f", b / s }')
  fi
  printf '| %s | %.2f s (%s%s; %.0f CPU s, %.1f cores busy; peak RSS %d MiB) | %s: %.2f s (%s%s; %.0f CPU s; peak RSS %d MiB) | %.2fx (%.2fx) |\n' \
    "$shown" "${ff_gen[$1]}" "$(mib_per_s "$bytes" "${ff_gen[$1]}")" "$ratio_ff" "${ff_cpu[$1]}" "${ff_busy[$1]}" \
    $((${ff_rss[$1]} / 1024)) "$2" "${ref_time[$1]}" "$(mib_per_s "$bytes" "${ref_time[$1]}")" "$ratio_ref" \
    "${ref_cpu[$1]}" $((${ref_rss[$1]} / 1024)) \
    "$(awk -v f="${ff_gen[$1]}" -v r="${ref_time[$1]}" 'BEGIN { print r / f }')" \
    "$(awk -v f="${ff_cpu[$1]}" -v r="${ref_cpu[$1]}" 'BEGIN { print r / f }')"
}
row none '`tar --sort=name | openssl dgst -sha256`'
row none+file 'the same work: `tar | tee FILE | openssl dgst -sha256`'
row gzip "\`pigz -6 -p $cores\`"
row zstd "\`zstd -3 -T$cores\`"
row zstd+sha "the same work: \`tar | tee (openssl dgst -sha256) | zstd -3 -T$cores | openssl dgst -sha256\`"

# Per-layer times of each last run: layers are generated at once, the manifest waits for the slowest.
for mode in "${MODES[@]}"; do
  echo
  echo "per-layer times, last $mode run:"
  sed -n 's/.*generated layer sha256:[0-9a-f]* (\([0-9]*\) bytes) in \([^:]*\): \(.*\)/\2 \1 \3/p' "$work/ff-$mode.log" |
    while read -r time size what; do
      printf '  %-10s %6d MiB  %s\n' "$time" $((size / 1048576)) "$(echo "$what" | sed 's|/nix/store/[a-z0-9]*-||g' | cut -c1-60)"
    done
  say "  whole generation (median of $RUNS)" "$(printf '%.2f s' "${ff_gen[$mode]}")"
done

# More levels, once each: the trade-off between time and size.
if ((${#LEVELS[@]})); then
  echo
  echo "| --compression | cold generation | CPU seconds | ratio |"
  echo "|---|---|---|---|"
  for level in "${LEVELS[@]}"; do
    result=$(ff_run "$level")
    read -r gen _ cpu _ size <<<"$result"
    printf '| `%s` | %.2f s | %.1f | %.2f |\n' "$level" "$gen" "$cpu" \
      "$(awk -v b="$ff_bytes" -v s="$size" 'BEGIN { print b / s }')"
  done
fi

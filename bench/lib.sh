# What the benchmark scripts share, sourced once $root is set: a scratch
# directory ($work) removed on exit, with every process listed in $pids or
# in a $work/*.pid file stopped; the release binary ($ff); the benchmark
# flake laid out in $flake (params.json is the caller's); and helpers.
work=$(mktemp -d /var/tmp/flakeforge-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}" $(cat "$work"/*.pid 2>/dev/null); do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
export NIX_CONFIG=$'experimental-features = nix-command flakes\nsandbox = false\nbuild-users-group =\nsubstituters ='

say() { printf '%-58s %s\n' "$1" "$2"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }
mib_per_s() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.0f MiB/s", b / 1048576 / t }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -sf "$1" >/dev/null && return; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
peak_rss_kib() { awk '/VmHWM/ { print $2 }' "/proc/$1/status"; }
# CPU seconds a process has used itself (user + system, not its children).
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ t[NR] = $1 } END { print t[int((NR + 1) / 2)] }'; }

(cd "$root" && cargo build --release --locked -q)
ff="$root/target/release/flakeforge"
flake="$work/flake"
mkdir -p "$flake/tools"
cp "$root/bench/flake.nix" "$flake/"
cp /bin/busybox "$flake/tools/busybox"

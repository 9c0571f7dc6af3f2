#!/usr/bin/env bash
# Offline checks of the Nix files, for machines without nixpkgs or KVM
# (where `nix flake check` cannot run):
#   1. every tracked .nix file parses (nix-instantiate --parse);
#   2. flake.nix, nixos/ and vm-tests/ call no fetcher and name no remote
#      source that would need the network (inside the VMs there is none);
#   3. the test flake the VMs serve has no inputs;
#   4. the NixOS module evaluates (with stand-ins for nixpkgs) to the
#      service nixos/service.json describes, and its options pass their
#      `flakeforge serve` flags when set and only then
#      (nixos/check-service-settings.nix; tests/systemd_unit.rs runs it
#      again with the built binary's `serve --help`, to compare defaults);
#   5. with --build, or when a static busybox is at hand: the test flake,
#      with that busybox in tools/<this system>/, has packages for this
#      system only, builds here and its programs print what the VM tests
#      expect; with a tools/<other system>/ as well (evaluated, not built)
#      it has both systems' packages, each built by its own system's busybox.
# Exits non-zero on any problem.
#
# Usage: nixos/check-offline.sh [--build | --no-build]
set -euo pipefail

cd "$(dirname "$0")/.."
build=auto
case "${1:-}" in
  --build) build=yes ;;
  --no-build) build=no ;;
  "") ;;
  *)
    echo "usage: $0 [--build | --no-build]" >&2
    exit 2
    ;;
esac

export NIX_CONFIG="${NIX_CONFIG:-$'experimental-features = nix-command flakes\nsandbox = false\nbuild-users-group =\nsubstituters ='}"
failures=0
fail() {
  echo "check-offline: $*" >&2
  failures=$((failures + 1))
}

command -v nix-instantiate >/dev/null || {
  echo "check-offline: nix-instantiate not found (apt-get install nix-bin)" >&2
  exit 1
}

# The .nix files: git's list in a checkout, else every one on disk.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t nix_files < <(git ls-files -- '*.nix')
else
  mapfile -t nix_files < <(find . -name '*.nix' -not -path './target/*' | sed 's|^\./||' | sort)
fi

# 1. Every .nix file parses.
parsed=0
for file in "${nix_files[@]}"; do
  [ -f "$file" ] || continue
  if output=$(nix-instantiate --parse "$file" 2>&1 >/dev/null); then
    parsed=$((parsed + 1))
  else
    fail "$file does not parse:"
    echo "$output" >&2
  fi
done
[ "$parsed" -gt 0 ] || fail "no .nix file found"

# 2. No network inside the VMs. Code is checked in the parser's output, which
# has no comments; there string literals are blanked out first, so that text
# mentioning a fetcher is no hit. Remote references in vm-tests/ live in
# strings: those are checked in the source, comment lines skipped.
scoped=()
for file in "${nix_files[@]}"; do
  case "$file" in
    flake.nix | nixos/* | vm-tests/*) [ -f "$file" ] && scoped+=("$file") ;;
  esac
done
fetchers='\b(builtins\.fetch[A-Za-z]*|fetchurl|fetchzip|fetchgit|fetchFrom[A-Za-z]+|fetchTarball|fetchGit|fetchTree|fetchClosure|fetchpatch[0-9]*|fetchCrate|fetchPypi|fetchNpmDeps)\b'
for file in "${scoped[@]}"; do
  code=$(nix-instantiate --parse "$file" 2>/dev/null | perl -pe 's/"(?:[^"\\]|\\.)*"/""/g') || continue
  if grep -qE "$fetchers" <<<"$code"; then
    fail "$file calls a fetcher, which needs the network: $(grep -oE "$fetchers" <<<"$code" | sort -u | tr '\n' ' ')"
  fi
  # <nixpkgs> and the like: a NIX_PATH lookup, impossible in a pure flake.
  if grep -q '__findFile' <<<"$code"; then
    fail "$file looks a path up in NIX_PATH (<...>)"
  fi
done
vm_files=()
for file in "${scoped[@]}"; do
  case "$file" in vm-tests/*) vm_files+=("$file") ;; esac
done
if [ "${#vm_files[@]}" -gt 0 ]; then
  # Remote flake references and URLs, but for the registry node itself.
  hits=$(perl -ne '
    next if /^\s*#/;
    while (m{\b((?:github|gitlab|sourcehut):[A-Za-z0-9~][^\s"\x27]*|(?:tarball\+[a-z]+|git\+(?:https?|ssh)|https?|ftp)://[^\s"\x27]*)}g) {
      my $ref = $1;
      next if $ref =~ m{^https?://(?:registry|localhost|127\.0\.0\.1|\[::1\])(?:[:/]|$)};
      print "$ARGV:$.: $ref\n";
    }
    close ARGV if eof;
  ' "${vm_files[@]}")
  [ -z "$hits" ] || fail "vm-tests reach out of the VMs:"$'\n'"$hits"
fi

# 3. The test flake has no inputs and takes nothing but self.
test_flake=vm-tests/test-flake/flake.nix
if [ -f "$test_flake" ]; then
  shape=$(nix-instantiate --eval --strict --json -E \
    "let f = import ./$test_flake; in { inputs = f.inputs or { }; args = builtins.attrNames (builtins.functionArgs f.outputs); }" 2>&1) ||
    fail "$test_flake does not evaluate: $shape"
  [ "$shape" = '{"args":["self"],"inputs":{}}' ] || fail "$test_flake must have no inputs (got $shape)"
fi

# 4. The module evaluates, and its service is what it should be.
if problems=$(nix-instantiate --eval --strict --json nixos/check-service-settings.nix --arg serveHelp null 2>&1); then
  [ "$problems" = "[]" ] || fail "the NixOS module's service: $problems"
else
  fail "nixos/check-service-settings.nix does not evaluate: $problems"
fi

# 5. Build the test flake with a static busybox and run its programs.
busybox=${BUSYBOX:-/bin/busybox}
static_busybox() { [ -x "$busybox" ] && ! ldd "$busybox" >/dev/null 2>&1; }
if [ "$build" = yes ] || { [ "$build" = auto ] && static_busybox && command -v nix >/dev/null; }; then
  if ! static_busybox; then
    fail "--build needs a static busybox at $busybox (apt-get install busybox-static) or in \$BUSYBOX"
  elif ! system=$(nix eval --impure --raw --expr builtins.currentSystem); then
    fail "nix cannot tell this machine's system"
  else
    case "$system" in
      aarch64-linux) other=x86_64-linux ;;
      *) other=aarch64-linux ;;
    esac
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # The busybox is this machine's: it goes where the flake looks for this
    # system's.
    mkdir -p "$work/flake/tools/$system"
    cp "$test_flake" "$work/flake/flake.nix"
    cp "$busybox" "$work/flake/tools/$system/busybox"
    run_package() {
      local json out
      json=$(nix build --no-link --json "$work/flake#$1") || return 1
      out=$(printf '%s' "$json" | sed -n 's/.*"out":"\([^"]*\)".*/\1/p')
      "$out/bin/$1"
    }
    systems=$(nix eval --json "$work/flake#packages" --apply builtins.attrNames) || systems="(eval failed)"
    [ "$systems" = "[\"$system\"]" ] || fail "test flake: with tools/$system/ alone it has packages for $systems"
    got=$(run_package hello) || got="(build failed)"
    [ "$got" = "Hello from flakeforge ($(uname -m))" ] || fail "test flake: hello printed: $got"
    got=$(run_package motd) || got="(build failed)"
    [ "$got" = "Nix built me on demand." ] || fail "test flake: motd printed: $got"
    got=$(run_package arch) || got="(build failed)"
    [ "$got" = "$(uname -m)" ] || fail "test flake: arch printed: $got"
    for package in motd arch; do
      main=$(nix eval --raw "$work/flake#$package.meta.mainProgram") || main="(eval failed)"
      [ "$main" = "$package" ] || fail "test flake: $package's meta.mainProgram is $main"
    done
    echo 'Hello from v1' >"$work/flake/greeting.txt"
    got=$(run_package hello) || got="(build failed)"
    [ "$got" = "Hello from v1 ($(uname -m))" ] || fail "test flake: hello with greeting.txt printed: $got"

    # Both systems, each from its own tools/<system>/. Only evaluated: the
    # stand-in for the other system's busybox is this one with a byte
    # appended, never run; it only has to differ from this system's.
    mkdir -p "$work/flake/tools/$other"
    cp "$busybox" "$work/flake/tools/$other/busybox"
    printf '\n' >>"$work/flake/tools/$other/busybox"
    systems=$(nix eval --json "$work/flake#packages" --apply builtins.attrNames) || systems="(eval failed)"
    expected=$(printf '"%s"\n' "$system" "$other" | LC_ALL=C sort | paste -sd, -)
    [ "$systems" = "[$expected]" ] || fail "test flake: with tools/$system/ and tools/$other/ it has packages for $systems"
    for s in "$system" "$other"; do
      want="$s $(sha256sum "$work/flake/tools/$s/busybox" | cut -d' ' -f1)"
      for package in busybox hello motd arch; do
        got=$(nix eval --raw "$work/flake#packages.$s.$package" \
          --apply 'd: d.system + " " + builtins.hashFile "sha256" d.builder') || got="(eval failed)"
        [ "$got" = "$want" ] ||
          fail "test flake: packages.$s.$package is not built for $s by tools/$s/busybox (system and builder's sha256: $got)"
      done
    done
  fi
else
  echo "check-offline: test flake not built (no static busybox at $busybox, or --no-build)"
fi

if [ "$failures" -ne 0 ]; then
  echo "check-offline: $failures problem(s)" >&2
  exit 1
fi
echo "check-offline: ok ($parsed .nix files parse; no network in flake.nix, nixos/, vm-tests/; the module evaluates)"

#!/usr/bin/env bash
# Builds (or finds in the cache) a Debian bookworm guest image for the VM
# tests and prints its directory, which holds `root.img` (ext4, booted with
# `root=/dev/vda`), `vmlinuz` and `initrd.img`.
#
#   tests/vm/build-image.sh amd64   # systemd, nix-bin + nix-setup-systemd,
#                                   # podman, docker.io, git, curl, openssl:
#                                   # both the registry and the client guest
#   tests/vm/build-image.sh arm64   # a podman client only, no systemd
#
# Images live in $FLAKEFORGE_VM_CACHE (default /var/cache/flakeforge-vm),
# keyed by a hash of the code that builds that architecture: editing it
# builds a new one (and removes the older one). Every guest runs `vm-agent`, which
# mounts the 9p share `host` at /mnt/host and runs the scripts the host
# drops into /mnt/host/cmd/ (see tests/vm/vmtest.py).
#
# amd64 is debootstrapped natively. arm64 is NOT configured through
# qemu-user, which takes many minutes (most of it in maintainer scripts and
# the initramfs): debootstrap --foreign only downloads and unpacks, every
# package is unpacked, and the guest boots its own small initramfs (made
# here from busybox-static and the kernel's modules) straight into
# vm-agent, which is all a podman client needs.
set -euo pipefail

arch=${1:?usage: $0 amd64|arm64}
case "$arch" in amd64 | arm64) ;; *) echo "build-image: unknown architecture $arch" >&2; exit 2 ;; esac
mirror=${FLAKEFORGE_VM_MIRROR:-http://deb.debian.org/debian}
cache=${FLAKEFORGE_VM_CACHE:-/var/cache/flakeforge-vm}

# The agent both guests run: each host command is a script cmd/N.sh; its
# output goes to N.out, its exit code to N.rc (written last, by rename).
write_agent() {
  local shell=$1
  mkdir -p "$root/usr/local/sbin"
  cat >"$root/usr/local/sbin/vm-agent" <<AGENT
#!$shell
share=/mnt/host
mkdir -p \$share
grep -q " \$share " /proc/mounts ||
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 host \$share || exit 1
mkdir -p \$share/cmd
echo up >\$share/agent-ready
while :; do
  for cmd in \$share/cmd/*.sh; do
    [ -e "\$cmd" ] || break
    id=\${cmd%.sh}
    $shell "\$cmd" >"\$id.out" 2>&1 </dev/null
    echo \$? >"\$id.rc.tmp"
    mv "\$id.rc.tmp" "\$id.rc"
    rm -f "\$cmd"
  done
  sleep 0.1
done
AGENT
  chmod 0755 "$root/usr/local/sbin/vm-agent"
}

trim() {
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
    "$root"/usr/share/info/* "$root"/debootstrap
}

make_disk() {
  local size=$1
  step "making the disk"
  mkfs.ext4 -q -F -L root -d "$root" "$work/root.img" "$size" >>"$log" 2>&1 || fail
}

build_amd64() {
  step "debootstrap"
  # In two stages, so that dpkg skips its fsync()s from the start (the image
  # is thrown away if the build fails): it spends most of its time in them.
  debootstrap --foreign --variant=minbase --include=systemd-sysv,udev,kmod,iproute2,procps,dbus \
    bookworm "$root" "$mirror" >>"$log" 2>&1 || fail
  mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
  echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/unsafe-io"
  chroot "$root" /debootstrap/debootstrap --second-stage >>"$log" 2>&1 || fail
  mount -t proc proc "$root/proc"
  mount -t sysfs sys "$root/sys"
  mount --bind /dev "$root/dev"
  mount --bind /dev/pts "$root/dev/pts"
  # No service starts inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  # A small initramfs: a chroot cannot tell which modules the VM needs, and
  # MODULES=most takes long to build.
  mkdir -p "$root/etc/initramfs-tools/conf.d"
  echo MODULES=list >"$root/etc/initramfs-tools/conf.d/modules"
  printf '%s\n' virtio_pci virtio_blk ext4 >>"$root/etc/initramfs-tools/modules"
  step "installing packages"
  in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }
  {
    in_root apt-get update -qq &&
      in_root apt-get install -y -qq --no-install-recommends \
        linux-image-amd64 initramfs-tools \
        nix-bin nix-setup-systemd git \
        podman docker.io \
        curl ca-certificates openssl
  } >>"$log" 2>&1 || fail
  rm -f "$root/usr/sbin/policy-rc.d"

  # Network: DHCP from QEMU's user network on the one NIC.
  cat >"$root/etc/systemd/network/50-vm.network" <<'NET'
[Match]
Name=en* eth*
[Network]
DHCP=ipv4
NET
  in_root systemctl enable systemd-networkd >>"$log" 2>&1 || fail
  # Nix without network: no binary cache, no global flake registry.
  cat >>"$root/etc/nix/nix.conf" <<'CONF'
experimental-features = nix-command flakes
substituters =
flake-registry = /etc/nix/registry.json
CONF
  echo '{"flakes": [], "version": 2}' >"$root/etc/nix/registry.json"
  # Each guest starts only what its role needs (the test starts the rest).
  in_root systemctl disable docker.service docker.socket containerd.service >>"$log" 2>&1 || true
  in_root systemctl disable apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    fstrim.timer dpkg-db-backup.timer >>"$log" 2>&1 || true
  echo "registry" >"$root/etc/hostname"
  cat >"$root/etc/hosts" <<'HOSTS'
127.0.0.1 localhost
HOSTS

  write_agent /bin/bash
  cat >"$root/etc/systemd/system/vm-agent.service" <<'UNIT'
[Unit]
Description=VM test agent: runs the host's commands from the 9p share
After=local-fs.target
[Service]
ExecStart=/usr/local/sbin/vm-agent
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
  in_root systemctl enable vm-agent.service >>"$log" 2>&1 || fail

  for m in dev/pts dev proc sys; do umount "$root/$m"; done
  rm "$root/etc/dpkg/dpkg.cfg.d/unsafe-io"
  # Drivers for hardware the VMs do not have: a smaller disk to write.
  local kernel_dir
  for kernel_dir in "$root"/lib/modules/*/kernel; do
    rm -rf "$kernel_dir"/drivers/{gpu,media,infiniband,net/wireless,net/ethernet,staging,iio,bluetooth,isdn,usb,hid,input/touchscreen} \
      "$kernel_dir"/sound "$kernel_dir"/net/{bluetooth,wireless,mac80211}
  done
  cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
  cp "$root"/boot/initrd.img-* "$work/initrd.img"
  trim
  make_disk 4G
}

build_arm64() {
  step "debootstrap --foreign (download and unpack only)"
  debootstrap --foreign --arch=arm64 --variant=minbase \
    --include=podman,runc,busybox-static,linux-image-arm64 \
    bookworm "$root" "$mirror" >>"$log" 2>&1 || fail
  step "unpacking every package"
  for deb in "$root"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$root" || fail
  done
  # What maintainer scripts would have made.
  cp "$root/usr/share/base-passwd/passwd.master" "$root/etc/passwd"
  cp "$root/usr/share/base-passwd/group.master" "$root/etc/group"
  echo client-arm64 >"$root/etc/hostname"
  echo '127.0.0.1 localhost' >"$root/etc/hosts"
  mkdir -p "$root/etc/containers"
  # No systemd, no journald, no CNI: cgroupfs, file events, no network for
  # containers (podman pull itself uses the guest's network).
  cat >"$root/etc/containers/containers.conf" <<'CONF'
[containers]
netns = "none"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF

  local kernel modules version
  kernel=$(ls "$root"/boot/vmlinuz-* | head -n1)
  version=${kernel##*/vmlinuz-}
  modules="$root/lib/modules/$version"
  step "initramfs for $version"
  depmod -b "$root" "$version" >>"$log" 2>&1 || fail
  local initrd="$work/initrd"
  mkdir -p "$initrd"/{bin,dev,proc,sys,newroot,modules}
  cp "$root/bin/busybox" "$initrd/bin/busybox"
  # The modules the guest needs, with their dependencies, in load order.
  # crc32c_generic: ext4 asks for "crc32c" by name, which modules.dep misses.
  local wanted="virtio_pci virtio_blk virtio_net crc32c_generic ext4 9p 9pnet_virtio overlay"
  local order=() seen=" "
  add_module() {
    local name=$1 line path deps dep
    line=$(grep -E "(^|/)${name//_/[_-]}\.ko(\.[a-z]+)?:" "$modules/modules.dep" || true)
    if [ -z "$line" ]; then
      grep -qE "(^|/)${name//_/[_-]}\.ko" "$modules/modules.builtin" || {
        echo "build-image: no module $name" >&2
        exit 1
      }
      return
    fi
    path=${line%%:*}
    case "$seen" in *" $path "*) return ;; esac
    seen="$seen$path "
    deps=${line#*:}
    for dep in $deps; do
      dep=${dep##*/}
      add_module "${dep%%.ko*}"
    done
    order+=("$path")
  }
  for name in $wanted; do add_module "$name"; done
  for path in "${order[@]}"; do
    local file=${path##*/}
    case "$file" in
      *.xz) xz -dc "$modules/$path" >"$initrd/modules/${file%.xz}" ;;
      *.zst) zstd -qdc "$modules/$path" >"$initrd/modules/${file%.zst}" ;;
      *) cp "$modules/$path" "$initrd/modules/$file" ;;
    esac
  done
  printf '%s\n' "${order[@]}" >>"$log"
  cat >"$initrd/init" <<INIT
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
for m in $(for p in "${order[@]}"; do f=${p##*/}; echo "${f%%.ko*}.ko"; done | tr '\n' ' '); do
  /bin/busybox insmod /modules/\$m || echo "initramfs: insmod \$m failed"
done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; /bin/busybox sleep 0.5; done
/bin/busybox mount -t ext4 /dev/vda /newroot || { echo "initramfs: cannot mount /dev/vda"; exec /bin/busybox sh; }
/bin/busybox umount /proc
/bin/busybox mount --move /dev /newroot/dev
exec /bin/busybox switch_root /newroot /sbin/vm-init
INIT
  chmod 0755 "$initrd/init"
  (cd "$initrd" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.img"
  cp "$kernel" "$work/vmlinuz"

  # PID 1 in the guest: mounts, the network QEMU's user mode expects, then
  # the agent.
  cat >"$root/sbin/vm-init" <<'INIT'
#!/bin/busybox sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sys /sys
$bb mount -t cgroup2 cgroup2 /sys/fs/cgroup
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts devpts /dev/pts
$bb mount -t tmpfs tmpfs /dev/shm
$bb mount -t tmpfs tmpfs /run
$bb mount -t tmpfs tmpfs /tmp
$bb hostname -F /etc/hostname
$bb ip link set lo up
$bb ip link set eth0 up
$bb ip addr add 10.0.2.15/24 dev eth0
$bb ip route add default via 10.0.2.2
echo "vm-init: up"
/usr/local/sbin/vm-agent
echo "vm-init: the agent ended"
$bb poweroff -f
INIT
  chmod 0755 "$root/sbin/vm-init"
  write_agent "/bin/busybox sh"
  trim
  make_disk 2G
}

# The key: the code that builds this architecture's image, so that editing
# the other one's does not throw this one away.
key=$({ declare -f "build_$arch" write_agent trim make_disk; echo "$arch"; } | sha256sum | cut -c1-16)
out="$cache/$arch-$key"

mkdir -p "$cache"
exec 9>"$cache/.lock-$arch"
flock 9 # one build per architecture at a time; later callers find it done
if [ -e "$out/ok" ]; then
  echo "$out"
  exit 0
fi
for old in "$cache/$arch"-*; do
  [ -e "$old" ] && [ "$old" != "$out" ] && rm -rf "$old"
done
for tool in debootstrap mkfs.ext4 depmod cpio; do
  command -v "$tool" >/dev/null || { echo "build-image: $tool missing (scripts/install-deps.sh)" >&2; exit 1; }
done

started=$(date +%s)
work=$(mktemp -d "$cache/build-$arch.XXXXXX")
root="$work/root"
cleanup() {
  for m in dev/pts dev proc sys; do umount "$root/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
log="$work/build.log"
step() { echo "build-image $arch: $* ($(($(date +%s) - started)) s)" >&2; }
fail() {
  echo "build-image $arch: failed; the end of $log:" >&2
  tail -n 40 "$log" >&2
  exit 1
}

"build_$arch"
touch "$work/ok"
rm -f "$log"
rm -rf "$root"
mv "$work" "$out"
trap - EXIT
step "done: $out"
echo "$out"

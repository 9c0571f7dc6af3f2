#!/usr/bin/env python3
"""flakeforge.service under real systemd, in Debian guests emulated by QEMU.

    tests/vm/vmtest.py --flakeforge target/debug/flakeforge [x86_64] [aarch64]

x86_64: a `registry` guest installs flakeforge as README.md's Debian section
says (the binary, contrib/systemd/flakeforge.service, /etc/default/flakeforge)
and serves a git repository of vm-tests/test-flake through Debian's
nix-daemon; the running service's settings are compared with
nixos/service.json. A `client` guest trusts the CA that `flakeforge ca`
printed and pulls and runs images with podman (`latest` and a git tag) and
docker; the registry restarts and a digest pulled before is pulled again;
`systemctl reload` makes it read its certificate files again; with access
control as README.md's Debian section says (the htpasswd file, readable by
root alone, handed to the dynamic user with LoadCredential), podman is
refused until it logs in.

aarch64: an arm64 guest pulls the multi-architecture `arch` image from a
flakeforge on this host (serving x86_64-linux and aarch64-linux; the host's
Nix builds arm64 under qemu-user) and runs it: it prints `aarch64`.

Guests reach the registry as `registry:5000`: QEMU's user network forwards
10.0.2.100:5000 in the guest to a port on the host's loopback (guestfwd),
where the registry guest's port 5000 is forwarded (hostfwd) or the host's
flakeforge listens. Nothing leaves the machine: the user networks are
restricted. Commands run through the 9p share each guest mounts at
/mnt/host (vm-agent in tests/vm/build-image.sh). Exits non-zero on the first
failure, with the guests' logs; prints each step's duration.
"""

import argparse
import errno
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICE_JSON = REPO / "nixos" / "service.json"
UNIT = REPO / "contrib" / "systemd" / "flakeforge.service"
TEST_FLAKE = REPO / "vm-tests" / "test-flake" / "flake.nix"
ARM64_BUSYBOX = Path("/opt/flakeforge-test/arm64/bin/busybox")
HOST_BUSYBOX = Path("/bin/busybox")

BOOT_TIMEOUT = 600
COMMAND_TIMEOUT = 600

started = time.monotonic()


def log(message):
    print(f"[vmtest {time.monotonic() - started:6.1f}s] {message}", flush=True)


class TestFailure(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    """A QEMU guest booted from a cached image, driven through its agent."""

    def __init__(self, name, arch, image, work, net, cmdline="", memory=1536):
        self.name = name
        self.arch = arch
        self.dir = work / name
        self.share = self.dir / "share"
        (self.share / "cmd").mkdir(parents=True)
        self.console = self.dir / "console.log"
        self.counter = 0
        if arch == "amd64":
            qemu = ["qemu-system-x86_64", "-machine", "q35", "-cpu", "max,-svm,-vmx"]
            console = "ttyS0"
            disk = ["-drive", f"file={image}/root.img,format=raw,if=virtio,snapshot=on"]
        else:
            qemu = ["qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a72"]
            console = "ttyAMA0"
            disk = [
                "-drive", f"file={image}/root.img,format=raw,if=none,id=root,snapshot=on",
                "-device", "virtio-blk-pci,drive=root",
            ]
        command = qemu + [
            "-accel", "tcg", "-smp", "1", "-m", str(memory),
            "-nodefaults", "-display", "none", "-vga", "none", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{self.console}",
            "-kernel", f"{image}/vmlinuz", "-initrd", f"{image}/initrd.img",
            "-append", f"root=/dev/vda rw console={console} quiet apparmor=0 systemd.hostname={name} {cmdline}".strip(),
            *disk,
            "-netdev", f"user,id=net,restrict=on,{net}", "-device", "virtio-net-pci,netdev=net",
            "-fsdev", f"local,id=share,path={self.share},security_model=none",
            "-device", "virtio-9p-pci,fsdev=share,mount_tag=host",
        ]
        self.booted = time.monotonic()
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.dir.joinpath("qemu.log").open("w"),
                                        stderr=subprocess.STDOUT)

    def wait_for_agent(self):
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not (self.share / "agent-ready").exists():
            if self.process.poll() is not None:
                raise TestFailure(f"{self.name}: QEMU exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise TestFailure(f"{self.name}: no agent after {BOOT_TIMEOUT} s")
            time.sleep(0.2)
        seconds = time.monotonic() - self.booted
        log(f"{self.name}: agent up {seconds:.0f} s after QEMU started")
        return seconds

    def execute(self, script, timeout=COMMAND_TIMEOUT):
        """Runs a shell script in the guest as root: (exit code, output)."""
        self.counter += 1
        base = self.share / "cmd" / f"{self.counter:04d}"
        tmp = base.with_suffix(".tmp")
        tmp.write_text("export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" + script + "\n")
        tmp.rename(base.with_suffix(".sh"))
        rc_file = base.with_suffix(".rc")
        deadline = time.monotonic() + timeout
        while not rc_file.exists():
            if self.process.poll() is not None:
                raise TestFailure(f"{self.name}: QEMU exited with {self.process.returncode} while running: {script}")
            if time.monotonic() > deadline:
                raise TestFailure(f"{self.name}: no answer within {timeout} s to: {script}")
            time.sleep(0.1)
        rc = int(rc_file.read_text().strip() or "255")
        output = base.with_suffix(".out").read_text(errors="replace")
        return rc, output

    def succeed(self, script, timeout=COMMAND_TIMEOUT):
        rc, output = self.execute(script, timeout)
        if rc != 0:
            raise TestFailure(f"{self.name}: exit {rc} from: {script}\n{output}")
        return output

    def fail(self, script, timeout=COMMAND_TIMEOUT):
        rc, output = self.execute(script, timeout)
        if rc == 0:
            raise TestFailure(f"{self.name}: expected a failure from: {script}\n{output}")
        return output

    def wait_until_succeeds(self, script, timeout=COMMAND_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            rc, output = self.execute(script, timeout)
            if rc == 0:
                return output
            if time.monotonic() > deadline:
                raise TestFailure(f"{self.name}: still failing after {timeout} s: {script}\n{output}")
            time.sleep(1)

    def put(self, name, data):
        """A file in the share: /mnt/host/NAME in the guest."""
        path = self.share / name
        if isinstance(data, Path):
            if data.is_dir():
                shutil.copytree(data, path)
            else:
                shutil.copy2(data, path)
        else:
            path.write_text(data)
        return f"/mnt/host/{name}"

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def console_tail(self, lines=40):
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no console log)"


def step(name):
    """Runs and times one step of a test; records its duration."""

    def wrap(function):
        def run(*args, **kwargs):
            log(f"--- {name}")
            begun = time.monotonic()
            result = function(*args, **kwargs)
            log(f"--- {name}: ok ({time.monotonic() - begun:.0f} s)")
            return result

        return run

    return wrap


def build_image(arch):
    begun = time.monotonic()
    result = subprocess.run([str(REPO / "tests" / "vm" / "build-image.sh"), arch], stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise TestFailure(f"building the {arch} image failed (its log is above)")
    log(f"{arch} image ready in {time.monotonic() - begun:.0f} s: {result.stdout.strip()}")
    return Path(result.stdout.strip())


def shared_settings():
    shared = json.loads(SERVICE_JSON.read_text())
    settings = {}
    for group in shared["service"]:
        settings.update(group["settings"])
    return settings, shared["environment"]


# How `systemctl show` spells a setting whose property has another name.
PROPERTY_NAMES = {"RestartSec": "RestartUSec"}


def expected_property(name, value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name == "RestartSec":
        return f"{value}s"
    if name == "SystemCallErrorNumber":
        return str(getattr(errno, value))
    if isinstance(value, list):
        return " ".join(value)
    return str(value)


# ---------------------------------------------------------------- x86_64


def make_flake_repo(registry):
    """The test flake as a git repository: tag v1 has a greeting.txt."""
    registry.put("test-flake", TEST_FLAKE.parent)
    registry.put("busybox", HOST_BUSYBOX)
    registry.succeed(
        """
        set -e
        mkdir -p /srv/images/tools/x86_64-linux
        cp /mnt/host/test-flake/flake.nix /srv/images/
        cp /mnt/host/busybox /srv/images/tools/x86_64-linux/busybox
        cd /srv/images
        git init -q
        git config user.name test && git config user.email test@localhost
        echo 'Hello from v1' > greeting.txt
        git add -A && git commit -qm v1 && git tag v1
        git rm -q greeting.txt && git commit -qm latest
        chmod -R a+rX /srv/images
        """
    )


@step("install flakeforge on the registry as README.md says")
def install_registry(registry, flakeforge):
    # Without its debug info the binary crosses the 9p share in a fraction
    # of the time; the code is the same.
    stripped = registry.share / "flakeforge"
    subprocess.run(["strip", "--strip-debug", "-o", str(stripped), str(flakeforge)], check=True)
    registry.put("flakeforge.service", UNIT)
    make_flake_repo(registry)
    registry.succeed(
        """
        set -e
        systemctl is-active nix-daemon.socket
        install -m 0755 /mnt/host/flakeforge /usr/local/bin/flakeforge
        install -m 0644 /mnt/host/flakeforge.service /etc/systemd/system/flakeforge.service
        cat > /etc/default/flakeforge <<'EOF'
FLAKEFORGE_ARGS="--flake /srv/images --hostname registry"
RUST_LOG=info,flakeforge=debug
EOF
        systemctl daemon-reload
        systemctl enable --now flakeforge
        """
    )
    wait_for_registry(registry)


def wait_for_registry(registry):
    registry.wait_until_succeeds("curl -sfk -o /dev/null https://localhost:5000/v2/", timeout=300)


def service_log(registry):
    _, output = registry.execute("journalctl --no-pager -n 60 -u flakeforge.service -u nix-daemon.service")
    return output


@step("the running service has the settings of nixos/service.json")
def check_hardening(registry):
    settings, environment = shared_settings()
    names = [PROPERTY_NAMES.get(name, name) for name in settings]
    shown = {}
    for line in registry.succeed(f"systemctl show flakeforge.service -p {','.join(names + ['Environment', 'MainPID'])}").splitlines():
        key, _, value = line.partition("=")
        shown[key] = value
    problems = []
    for name, value in settings.items():
        prop = PROPERTY_NAMES.get(name, name)
        have = shown.get(prop)
        want = expected_property(name, value)
        if name == "RestrictAddressFamilies":
            if have is None or set(have.split()) != set(value):
                problems.append(f"{prop}: systemctl show says {have!r}, service.json {value!r}")
        elif name == "SystemCallFilter":
            problems += syscall_filter_problems(registry, value, have or "")
        elif have != want:
            problems.append(f"{prop}: systemctl show says {have!r}, service.json {want!r}")
    have_env = dict(item.partition("=")[::2] for item in shlex.split(shown.get("Environment", "")))
    for name, value in environment.items():
        if have_env.get(name) != value:
            problems.append(f"Environment {name}: {have_env.get(name)!r}, service.json {value!r}")
    # What the kernel says about the process itself.
    pid = shown["MainPID"]
    status = registry.succeed(f"cat /proc/{pid}/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    for field, want in [("NoNewPrivs", "1"), ("Seccomp", "2"), ("CapBnd", "0000000000000000"), ("CapEff", "0000000000000000")]:
        if fields.get(field, "").strip() != want:
            problems.append(f"/proc/{pid}/status {field}: {fields.get(field, '').strip()!r}, expected {want!r}")
    # A dynamic user's ID is from 61184 to 65519 (the guest has no
    # libnss-systemd to show its name).
    uid = int(registry.succeed(f"stat -c %u /proc/{pid}").strip())
    if not 61184 <= uid <= 65519:
        problems.append(f"the service runs as UID {uid}, not a dynamic user")
    if problems:
        raise TestFailure("the service's settings differ from nixos/service.json:\n  " + "\n  ".join(problems))
    log(f"registry: {len(settings)} settings and {len(environment)} environment variables as in service.json")


def syscall_filter_problems(registry, value, have):
    """The allow-list systemd shows must be what the filter lines mean."""
    allowed, denied = set(), set()
    for entry in value:
        target = denied if entry.startswith("~") else allowed
        target.update(syscall_group(registry, entry.lstrip("~")))
    expected = allowed - denied
    shown = set(have.split())
    # Calls this architecture does not have are missing from what systemd
    # shows (riscv_hwprobe on x86_64): only calls beyond the filter count,
    # and the filter must be an allow-list that lets Nix raise its limits.
    log(f"registry: {len(shown)} system calls allowed; the filter names {len(expected - shown)} more "
        f"that this architecture lacks: {' '.join(sorted(expected - shown))}")
    if have.startswith("~") or shown - expected or "setrlimit" not in shown:
        return [f"SystemCallFilter: {len(shown)} calls allowed, expected {len(expected)}; extra {sorted(shown - expected)[:10]}"]
    return []


def syscall_group(registry, name):
    """The system calls in a group, nested groups expanded."""
    if not name.startswith("@"):
        return {name}
    calls = set()
    output = registry.succeed(f"systemd-analyze syscall-filter --no-pager {shlex.quote(name)}")
    for line in output.splitlines()[1:]:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        calls |= syscall_group(registry, entry) if entry.startswith("@") else {entry}
    return calls


@step("the client trusts the CA that `flakeforge ca` prints")
def trust_ca(registry, client):
    ca = registry.succeed("flakeforge ca --state-dir /var/lib/flakeforge")
    if "BEGIN CERTIFICATE" not in ca:
        raise TestFailure(f"flakeforge ca printed: {ca}")
    client.put("ca.crt", ca)
    client.succeed(
        """
        set -e
        echo '10.0.2.100 registry' >> /etc/hosts
        ! curl -sf -o /dev/null https://registry:5000/v2/   # not trusted yet
        for dir in /etc/containers/certs.d/registry:5000 /etc/docker/certs.d/registry:5000; do
          mkdir -p "$dir" && cp /mnt/host/ca.crt "$dir/ca.crt"
        done
        curl -sf --cacert /mnt/host/ca.crt https://registry:5000/v2/
        """
    )


def pull(client_cli, image, seconds=900):
    """A shell command: `CLI pull -q IMAGE` until it succeeds or `seconds`
    pass. An image that takes longer to build than flakeforge's
    --answer-within is answered 429 "being built ... try again shortly";
    podman asks again by itself for a while, docker not at all."""
    return (
        f"end=$(($(date +%s) + {seconds})); "
        f"until {client_cli} pull -q {image} >/dev/null 2>&1; do "
        f"[ $(date +%s) -lt $end ] || exit 1; sleep 5; done"
    )


@step("podman pulls and runs `hello`, built through the daemon")
def podman_pull(registry, client):
    out = client.succeed(pull("podman", "registry:5000/hello") + " && podman run --rm --network none registry:5000/hello", timeout=960)
    if out.strip().splitlines()[-1] != "Hello from flakeforge (x86_64)":
        raise TestFailure(f"podman run hello printed: {out}\n{service_log(registry)}")
    # The daemon built it and registered the service's GC root.
    roots = registry.succeed("ls -l /nix/var/nix/gcroots/auto/")
    if "/var/lib/private/flakeforge/gcroots/" not in roots and "/var/lib/flakeforge/gcroots/" not in roots:
        raise TestFailure(f"no GC root of the service registered with the daemon:\n{roots}")
    return client.succeed("podman image inspect --format '{{.Digest}}' registry:5000/hello").strip()


@step("a git-ref tag: podman pulls `hello:v1`")
def podman_tag(registry, client):
    out = client.succeed(pull("podman", "registry:5000/hello:v1") + " && podman run --rm --network none registry:5000/hello:v1", timeout=960)
    if out.strip().splitlines()[-1] != "Hello from v1 (x86_64)":
        raise TestFailure(f"podman run hello:v1 printed: {out}\n{service_log(registry)}")


@step("docker pulls and runs `motd`")
def docker_pull(registry, client):
    client.succeed("systemctl start docker.service", timeout=300)  # started at boot: waits for it
    out = client.succeed(pull("docker", "registry:5000/motd") + " && docker run --rm --network none registry:5000/motd", timeout=960)
    if out.strip().splitlines()[-1] != "Nix built me on demand.":
        raise TestFailure(f"docker run motd printed: {out}\n{service_log(registry)}")


@step("after a restart, the digest pulled before is pulled again")
def restart(registry, client, digest):
    before = registry.succeed("systemctl show -p MainPID --value flakeforge").strip()
    registry.succeed("systemctl restart flakeforge")
    wait_for_registry(registry)
    after = registry.succeed("systemctl show -p MainPID --value flakeforge").strip()
    if before == after:
        raise TestFailure(f"the service did not restart (MainPID {before})")
    out = client.succeed(
        f"podman rmi -f registry:5000/hello >/dev/null && podman pull -q registry:5000/hello@{digest}"
        f" && podman run --rm --network none registry:5000/hello@{digest}",
        timeout=900,
    )
    if out.strip().splitlines()[-1] != "Hello from flakeforge (x86_64)":
        raise TestFailure(f"podman run hello@{digest} printed: {out}\n{service_log(registry)}")


SERVED_FINGERPRINT = (
    "openssl s_client -connect localhost:5000 -servername registry </dev/null 2>/dev/null"
    " | openssl x509 -noout -fingerprint -sha256"
)
FILE_FINGERPRINT = "openssl x509 -noout -fingerprint -sha256 -in /var/lib/flakeforge/tls/server.crt"


@step("`systemctl reload` makes the service read its certificate files again")
def reload(registry, client):
    pid = registry.succeed("systemctl show -p MainPID --value flakeforge").strip()
    first = registry.succeed(SERVED_FINGERPRINT).strip()
    if first != registry.succeed(FILE_FINGERPRINT).strip():
        raise TestFailure("the served certificate is not tls/server.crt")
    # Without the files, the local CA issues a new server certificate: but
    # only when the service looks at them again, which a reload asks for.
    registry.succeed("rm /var/lib/flakeforge/tls/server.crt /var/lib/flakeforge/tls/server.key && sleep 2")
    if registry.succeed(SERVED_FINGERPRINT).strip() != first:
        raise TestFailure("the certificate changed before the reload")
    registry.succeed("systemctl reload flakeforge")
    second = registry.wait_until_succeeds(f"f=$({SERVED_FINGERPRINT}) && [ \"$f\" != {shlex.quote(first)} ] && echo \"$f\"", timeout=60).strip()
    if second != registry.succeed(FILE_FINGERPRINT).strip():
        raise TestFailure("after the reload the served certificate is not the new tls/server.crt")
    if registry.succeed("systemctl show -p MainPID --value flakeforge").strip() != pid:
        raise TestFailure("the reload restarted the service")
    # Written by the service itself, as its dynamic user.
    registry.succeed(f"[ $(stat -c %u /var/lib/flakeforge/tls/server.key) = $(stat -c %u /proc/{pid}) ]")
    client.succeed("curl -sf --cacert /mnt/host/ca.crt https://registry:5000/v2/")


@step("access control: the htpasswd file as a credential, podman logs in")
def access_control(registry, client):
    password = "vm-secret-password"
    entry = subprocess.run(["htpasswd", "-nbB", "alice", password], check=True, capture_output=True, text=True)
    registry.put("htpasswd", entry.stdout)
    registry.succeed(
        r"""
        set -e
        install -d -m 0700 /etc/flakeforge
        install -m 0600 /mnt/host/htpasswd /etc/flakeforge/htpasswd
        mkdir -p /etc/systemd/system/flakeforge.service.d
        printf '[Service]\nLoadCredential=htpasswd:/etc/flakeforge/htpasswd\n' > /etc/systemd/system/flakeforge.service.d/auth.conf
        sed -i 's|^FLAKEFORGE_ARGS="\(.*\)"$|FLAKEFORGE_ARGS="\1 --htpasswd /run/credentials/flakeforge.service/htpasswd"|' /etc/default/flakeforge
        systemctl daemon-reload
        systemctl restart flakeforge
        """
    )
    registry.wait_until_succeeds("[ $(curl -sk -o /dev/null -w '%{http_code}' https://localhost:5000/v2/) = 401 ]", timeout=300)
    out = client.succeed(
        f"""
        set -e
        podman rmi -af >/dev/null
        if podman pull -q registry:5000/hello >/dev/null 2>&1; then echo "pulled without logging in"; exit 1; fi
        podman login -u alice -p {password} registry:5000
        podman pull -q registry:5000/hello >/dev/null
        podman run --rm --network none registry:5000/hello
        """,
        timeout=600,
    )
    if out.strip().splitlines()[-1] != "Hello from flakeforge (x86_64)":
        raise TestFailure(f"podman run hello after logging in printed: {out}\n{service_log(registry)}")
    if password in service_log(registry):
        raise TestFailure("the password is in the service's journal")


# Units a guest of the role does not need, kept from starting at boot (CPU
# time is scarce under emulation).
UNNEEDED = ["podman-auto-update.timer", "podman-auto-update.service", "podman-restart.service"]
REGISTRY_UNNEEDED = UNNEEDED + ["docker.service", "docker.socket", "containerd.service"]
CLIENT_UNNEEDED = UNNEEDED + ["nix-daemon.socket", "nix-daemon.service"]


def masks(units):
    return " ".join(f"systemd.mask={unit}" for unit in units)


def test_x86_64(work, flakeforge, image):
    port = free_port()
    registry = Guest("registry", "amd64", image, work, f"hostfwd=tcp:127.0.0.1:{port}-:5000",
                     cmdline=masks(REGISTRY_UNNEEDED))
    client = Guest("client", "amd64", image, work, f"guestfwd=tcp:10.0.2.100:5000-cmd:socat - TCP:127.0.0.1:{port}",
                   cmdline=masks(CLIENT_UNNEEDED))
    guests = [registry, client]
    try:
        boot = [guest.wait_for_agent() for guest in guests]
        # dockerd takes a while to start under emulation: meanwhile the
        # registry is installed.
        client.succeed("systemctl start --no-block docker.service")
        install_registry(registry, flakeforge)
        check_hardening(registry)
        trust_ca(registry, client)
        digest = podman_pull(registry, client)
        podman_tag(registry, client)
        docker_pull(registry, client)
        restart(registry, client, digest)
        reload(registry, client)
        access_control(registry, client)
        return boot
    except TestFailure:
        for guest in guests:
            print(f"=== {guest.name} console (end)\n{guest.console_tail()}", file=sys.stderr)
        if registry.process.poll() is None:
            print(f"=== registry journal\n{service_log(registry)}", file=sys.stderr)
        raise
    finally:
        for guest in guests:
            guest.stop()


# ---------------------------------------------------------------- aarch64


def start_host_registry(work, flakeforge):
    """flakeforge on this host's loopback, serving both architectures."""
    flake = work / "multiarch-flake"
    for system, busybox in [("x86_64-linux", HOST_BUSYBOX), ("aarch64-linux", ARM64_BUSYBOX)]:
        if not busybox.exists():
            raise TestFailure(f"{busybox} is missing (scripts/install-deps.sh)")
        (flake / "tools" / system).mkdir(parents=True)
        shutil.copy2(busybox, flake / "tools" / system / "busybox")
    shutil.copy2(TEST_FLAKE, flake / "flake.nix")
    port = free_port()
    server_log = (work / "host-flakeforge.log").open("w")
    server = subprocess.Popen(
        [str(flakeforge), "serve", "--flake", str(flake), "--listen", f"127.0.0.1:{port}",
         "--hostname", "registry", "--state-dir", str(work / "host-state"),
         "--system", "x86_64-linux", "--system", "aarch64-linux"],
        stdin=subprocess.DEVNULL, stdout=server_log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise TestFailure(f"the host's flakeforge did not start:\n{(work / 'host-flakeforge.log').read_text()}")
            time.sleep(0.2)
    ca = subprocess.run([str(flakeforge), "ca", "--state-dir", str(work / "host-state")],
                        stdout=subprocess.PIPE, text=True, check=True).stdout
    return server, port, ca


@step("an arm64 guest pulls the multi-arch `arch` image and runs the arm64 entry")
def arm64_pull(client, ca):
    client.put("ca.crt", ca)
    out = client.succeed(
        """
        set -e
        echo '10.0.2.100 registry' >> /etc/hosts
        mkdir -p /etc/containers/certs.d/registry:5000
        cp /mnt/host/ca.crt /etc/containers/certs.d/registry:5000/ca.crt
        """ + pull("podman", "registry:5000/arch") + """
        podman image inspect --format '{{.Architecture}}' registry:5000/arch
        podman run --rm registry:5000/arch
        """,
        timeout=960,
    )
    if out.split() != ["arm64", "aarch64"]:
        raise TestFailure(f"the arm64 guest's podman printed: {out}")


def test_aarch64(work, flakeforge, image):
    server, port, ca = start_host_registry(work, flakeforge)
    client = Guest("client-arm64", "arm64", image, work, f"guestfwd=tcp:10.0.2.100:5000-cmd:socat - TCP:127.0.0.1:{port}",
                   memory=1024)
    try:
        boot = client.wait_for_agent()
        arm64_pull(client, ca)
        return boot
    except TestFailure:
        print(f"=== client-arm64 console (end)\n{client.console_tail()}", file=sys.stderr)
        print(f"=== host flakeforge (end)\n{(work / 'host-flakeforge.log').read_text()[-4000:]}", file=sys.stderr)
        raise
    finally:
        client.stop()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flakeforge", required=True, type=Path, help="the flakeforge binary to install in the guests")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, shares)")
    parser.add_argument("tests", nargs="*", help="x86_64, aarch64 (default: both)")
    args = parser.parse_args()
    args.tests = args.tests or ["x86_64", "aarch64"]
    if not set(args.tests) <= {"x86_64", "aarch64"}:
        parser.error(f"unknown tests: {args.tests}")
    flakeforge = args.flakeforge.resolve()
    for tool in ["qemu-system-x86_64", "qemu-system-aarch64", "socat", "debootstrap"]:
        if shutil.which(tool) is None:
            raise TestFailure(f"{tool} is missing (scripts/install-deps.sh)")
    work = Path(tempfile.mkdtemp(prefix="flakeforge-vm."))
    # The arm64 image builds while the x86_64 guests run.
    arm64_build = None
    if "aarch64" in args.tests:
        arm64_build = subprocess.Popen([str(REPO / "tests" / "vm" / "build-image.sh"), "arm64"], stdout=subprocess.PIPE, text=True)
    try:
        timings = {}
        if "x86_64" in args.tests:
            image = build_image("amd64")
            begun = time.monotonic()
            boot = test_x86_64(work, flakeforge, image)
            timings["x86_64"] = (time.monotonic() - begun, boot)
        if arm64_build is not None:
            begun = time.monotonic()
            out, _ = arm64_build.communicate()
            if arm64_build.returncode != 0:
                raise TestFailure("building the arm64 image failed (its log is above)")
            log(f"arm64 image ready (waited {time.monotonic() - begun:.0f} s): {out.strip()}")
            arm64_build = None
            begun = time.monotonic()
            boot = test_aarch64(work, flakeforge, Path(out.strip()))
            timings["aarch64"] = (time.monotonic() - begun, [boot])
        for name, (seconds, boots) in timings.items():
            log(f"{name}: {seconds:.0f} s (agents up after {', '.join(f'{b:.0f}' for b in boots)} s)")
        log(f"all VM tests passed in {time.monotonic() - started:.0f} s")
    finally:
        if arm64_build is not None:
            arm64_build.kill()
            arm64_build.wait()
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def stop_on_signal(signum, _frame):
    # Runs the `finally` blocks, which stop the guests and the host's server.
    raise TestFailure(f"stopped by signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGHUP, stop_on_signal)
    try:
        main()
    except TestFailure as failure:
        log(f"FAILED: {failure}")
        sys.exit(1)

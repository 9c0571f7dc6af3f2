# One name, two architectures: the registry serves the test flake for
# x86_64-linux and aarch64-linux, building the other system's packages under
# binfmt emulation (qemu-user), so every tag is an image index. podman on the
# client pulls the plain name, gets the image of its own architecture and runs
# it; curl checks that the index lists both platforms and that each entry's
# manifest and config are pullable by digest and name their architecture.
{
  registryNode,
  testFlake,
  # The system the VMs do not run: "aarch64-linux" on x86_64-linux, and the
  # other way round. testFlake has busyboxes for both.
  otherSystem,
}:
{
  name = "flakeforge-multiarch";

  nodes = {
    registry =
      { ... }:
      {
        imports = [ (registryNode { flake = "${testFlake}"; }) ];

        services.flakeforge.systems = [
          "x86_64-linux"
          "aarch64-linux"
        ];

        # Registers qemu-user for the other system with binfmt_misc; NixOS
        # then adds that system to nix.settings.extra-platforms, so that the
        # daemon builds its derivations here, and /run/binfmt with the
        # interpreter to nix.settings.extra-sandbox-paths, so that the
        # sandbox can run it. Both settings are in /etc/nix/nix.conf: the
        # interpreter (and qemu-user, in its closure) belongs to the system's
        # closure, which the VM's Nix database holds. The builds need no
        # other store path: the busyboxes are in testFlake.
        boot.binfmt.emulatedSystems = [ otherSystem ];
      };

    client =
      { pkgs, ... }:
      {
        virtualisation.podman.enable = true;
        virtualisation.diskSize = 2048;
        environment.systemPackages = [ pkgs.curl ];
      };
  };

  testScript = ''
    import json
    import shlex

    start_all()
    registry.wait_for_unit("flakeforge.service")
    registry.wait_for_open_port(5000)
    client.wait_for_unit("multi-user.target")

    arch = client.succeed("uname -m").strip()
    other_arch = {"x86_64-linux": "x86_64", "aarch64-linux": "aarch64"}["${otherSystem}"]
    assert arch != other_arch, f"the VMs run {arch}, which is the emulated system"
    go_arch = {"x86_64": "amd64", "aarch64": "arm64"}[arch]

    def service_log():
        return registry.execute("journalctl --no-pager -u flakeforge.service | tail -n 40")[1]

    with subtest("the registry emulates ${otherSystem}"):
        registry.wait_for_unit("systemd-binfmt.service")
        registry.succeed("test -e /proc/sys/fs/binfmt_misc/${otherSystem}")
        registry.succeed("grep -E '^extra-platforms = (.* )?${otherSystem}( |$)' /etc/nix/nix.conf")
        # The interpreter the build sandbox gets is a valid store path (Nix
        # adds the closure of each store path in extra-sandbox-paths).
        registry.succeed("nix-store --query --hash $(readlink -f /run/binfmt/${otherSystem})")
        out = registry.succeed("${testFlake}/tools/${otherSystem}/busybox uname -m").strip()
        assert out == other_arch, f"the emulated busybox says it runs on {out}"

    with subtest("the client trusts the registry's CA"):
        ca = registry.succeed("flakeforge-ca")
        client.succeed(
            "mkdir -p /etc/containers/certs.d/registry:5000",
            f"printf '%s' {shlex.quote(ca)} > /etc/containers/certs.d/registry:5000/ca.crt",
        )

    def get(path, accept):
        return client.succeed(
            "curl -sSf --cacert /etc/containers/certs.d/registry:5000/ca.crt"
            f" -H {shlex.quote('Accept: ' + accept)} https://registry:5000/v2/{path}"
        )

    with subtest("the tag is an image index with both platforms"):
        # The first request for the tag builds both systems.
        index_type = "application/vnd.oci.image.index.v1+json"
        index = json.loads(get("arch/manifests/latest", index_type))
        assert index.get("mediaType") == index_type, index
        entries = {
            (m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant")): m
            for m in index["manifests"]
        }
        assert len(entries) == len(index["manifests"]), f"a platform twice: {index}"
        assert set(entries) == {("linux", "amd64", None), ("linux", "arm64", "v8")}, \
            f"{json.dumps(index, indent=2)}\n{service_log()}"

    with subtest("each entry is pullable by digest and names its architecture"):
        manifest_type = "application/vnd.oci.image.manifest.v1+json"
        for platform, entry in entries.items():
            assert entry["mediaType"] == manifest_type, entry
            manifest = json.loads(get(f"arch/manifests/{entry['digest']}", manifest_type))
            config = json.loads(
                get(f"arch/blobs/{manifest['config']['digest']}", manifest["config"]["mediaType"])
            )
            got = (config["os"], config["architecture"], config.get("variant"))
            assert got == platform, f"{entry['digest']} is {got}, the index says {platform}"
            assert config["config"]["Cmd"] == ["/bin/arch"], config["config"]

    with subtest("podman pulls the plain name and runs its own architecture"):
        client.succeed("podman pull registry:5000/arch")
        out = client.succeed("podman run --rm --network none registry:5000/arch").strip()
        assert out == arch, f"registry:5000/arch printed {out} on {arch}"
        image_arch = client.succeed(
            "podman image inspect --format '{{.Os}}/{{.Architecture}}' registry:5000/arch"
        ).strip()
        assert image_arch == f"linux/{go_arch}", image_arch
  '';
}

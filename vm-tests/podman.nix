# podman pulls from flakeforge over verified TLS. The served flake is a git
# work tree made in the test (owned by root, not by the service's dynamic
# user) with a tag `v1` one commit behind: a tag selects a git ref of the
# flake. Also: a second image, a composed image, pulling by commit and by
# digest, and a restart of the registry.
{ registryNode, testFlake }:
{
  name = "flakeforge-podman";

  nodes = {
    registry =
      { lib, ... }:
      {
        imports = [ (registryNode { flake = "/srv/images"; }) ];
        # Started by the test once /srv/images holds the flake.
        systemd.services.flakeforge.wantedBy = lib.mkForce [ ];
      };

    client =
      { ... }:
      {
        virtualisation.podman.enable = true;
        virtualisation.diskSize = 2048;
      };
  };

  testScript = ''
    import shlex

    start_all()
    registry.wait_for_unit("multi-user.target")
    client.wait_for_unit("multi-user.target")

    arch = registry.succeed("uname -m").strip()
    git = "git -C /srv/images -c user.name=test -c user.email=test@registry"

    with subtest("the served flake is a git repository with a tag"):
        registry.succeed(
            "mkdir -p /srv/images",
            "cp ${testFlake}/flake.nix /srv/images/flake.nix",
            "cp -R ${testFlake}/tools /srv/images/tools",
            "chmod -R u+w /srv/images",
            "echo 'Hello from v1' > /srv/images/greeting.txt",
            "git -C /srv/images init --quiet --initial-branch=main",
            "git -C /srv/images add --all",
            f"{git} commit --quiet --message v1",
            "git -C /srv/images tag v1",
            "echo 'Hello from v2' > /srv/images/greeting.txt",
            f"{git} commit --quiet --all --message v2",
        )
        v1_rev = registry.succeed("git -C /srv/images rev-parse v1").strip()
        registry.succeed("systemctl start flakeforge.service")
        registry.wait_for_unit("flakeforge.service")
        registry.wait_for_open_port(5000)

    def podman(args):
        return client.succeed(f"podman {args}").strip()

    def run(image, *command):
        return podman(f"run --rm --network none {image} {shlex.join(command)}")

    def digest(image):
        return podman(f"image inspect --format '{{{{.Digest}}}}' {image}")

    with subtest("podman verifies the registry's certificate"):
        client.fail("podman pull registry:5000/hello")
        ca = registry.succeed("flakeforge-ca")
        client.succeed(
            "mkdir -p /etc/containers/certs.d/registry:5000",
            f"printf '%s' {shlex.quote(ca)} > /etc/containers/certs.d/registry:5000/ca.crt",
        )

    with subtest("podman pulls an image built on demand and runs it"):
        podman("pull registry:5000/hello")
        out = run("registry:5000/hello")
        assert out == f"Hello from v2 ({arch})", out

    with subtest("a second image"):
        podman("pull registry:5000/motd")
        out = run("registry:5000/motd")
        assert out == "Nix built me on demand.", out

    with subtest("a composed image holds both packages"):
        podman("pull registry:5000/hello/motd")
        assert run("registry:5000/hello/motd", "/bin/motd") == "Nix built me on demand."
        assert run("registry:5000/hello/motd", "/bin/hello") == f"Hello from v2 ({arch})"
        podman("pull registry:5000/motd/hello")
        assert digest("registry:5000/motd/hello") == digest("registry:5000/hello/motd"), \
            "the order of the packages changed the image"

    with subtest("a tag is a git ref of the served flake"):
        podman("pull registry:5000/hello:v1")
        out = run("registry:5000/hello:v1")
        assert out == f"Hello from v1 ({arch})", out
        assert digest("registry:5000/hello:v1") != digest("registry:5000/hello:latest")
        podman(f"pull registry:5000/hello:{v1_rev}")
        assert digest(f"registry:5000/hello:{v1_rev}") == digest("registry:5000/hello:v1"), \
            "the tag and its commit gave different images"
        client.fail("podman pull registry:5000/hello:no-such-ref")

    with subtest("after a restart the registry serves a digest pulled before"):
        v1_digest = digest("registry:5000/hello:v1")
        registry.succeed("systemctl restart flakeforge.service")
        registry.wait_for_unit("flakeforge.service")
        registry.wait_for_open_port(5000)
        podman("rmi --all --force")
        client.fail("podman image exists registry:5000/hello:v1")
        podman(f"pull registry:5000/hello@{v1_digest}")
        out = run(f"registry:5000/hello@{v1_digest}")
        assert out == f"Hello from v1 ({arch})", out
  '';
}

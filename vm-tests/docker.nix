# docker pulls from flakeforge over verified TLS: the registry serves the test
# flake from the store and starts at boot; the client trusts the registry's
# local CA, pulls and runs images, and pulls again by digest, also after the
# registry restarted.
{ registryNode, testFlake }:
{
  name = "flakeforge-docker";

  nodes = {
    registry = registryNode { flake = "${testFlake}"; };

    client =
      { ... }:
      {
        virtualisation.docker.enable = true;
        virtualisation.diskSize = 2048;
      };
  };

  testScript =
    { nodes, ... }:
    ''
      import json
      import shlex

      start_all()
      registry.wait_for_unit("flakeforge.service")
      registry.wait_for_open_port(5000)
      client.wait_for_unit("docker.service")

      arch = registry.succeed("uname -m").strip()
      go_arch = {"x86_64": "amd64", "aarch64": "arm64"}[arch]

      with subtest("the service runs hardened, as its dynamic user"):
          user = registry.succeed(
              "stat -c %U /proc/$(systemctl show -p MainPID --value flakeforge.service)"
          ).strip()
          assert user == "flakeforge", f"flakeforge runs as {user}"
          print(registry.succeed("systemd-analyze security flakeforge.service | tail -n 1"))

      with subtest("flakeforge-ca prints the CA the service made"):
          ca = registry.succeed("flakeforge-ca")
          assert "BEGIN CERTIFICATE" in ca, ca
          same = registry.succeed(
              "${nodes.registry.services.flakeforge.package}/bin/flakeforge ca --state-dir /var/lib/flakeforge"
          )
          assert same == ca, "flakeforge ca and flakeforge-ca disagree"
          # The certificate names the registry by the name clients use.
          registry.succeed("curl -sSf --cacert /var/lib/flakeforge/tls/ca.crt https://registry:5000/v2/")

      with subtest("docker refuses the registry until it trusts the CA"):
          client.fail("docker pull registry:5000/hello")
          client.succeed(
              "mkdir -p /etc/docker/certs.d/registry:5000",
              f"printf '%s' {shlex.quote(ca)} > /etc/docker/certs.d/registry:5000/ca.crt",
          )

      with subtest("docker pulls an image built on demand and runs it"):
          client.succeed("docker pull registry:5000/hello")
          out = client.succeed("docker run --rm --network none registry:5000/hello").strip()
          assert out == f"Hello from flakeforge ({arch})", out
          digest_ref = client.succeed(
              "docker image inspect --format '{{index .RepoDigests 0}}' registry:5000/hello"
          ).strip()
          assert digest_ref.startswith("registry:5000/hello@sha256:"), digest_ref

      with subtest("docker pulls it again by digest"):
          client.succeed("docker rmi registry:5000/hello")
          client.fail(f"docker image inspect {digest_ref}")
          client.succeed(f"docker pull {digest_ref}")
          out = client.succeed(f"docker run --rm --network none {digest_ref}").strip()
          assert out == f"Hello from flakeforge ({arch})", out

      with subtest("a second image, with the config flakeforge writes"):
          client.succeed("docker pull registry:5000/motd")
          out = client.succeed("docker run --rm --network none registry:5000/motd").strip()
          assert out == "Nix built me on demand.", out
          cmd = json.loads(
              client.succeed("docker image inspect --format '{{json .Config.Cmd}}' registry:5000/motd")
          )
          assert cmd == ["/bin/motd"], cmd
          image_arch = client.succeed(
              "docker image inspect --format '{{.Os}}/{{.Architecture}}' registry:5000/motd"
          ).strip()
          assert image_arch == f"linux/{go_arch}", image_arch

      with subtest("the served store paths are GC roots of the daemon"):
          registry.succeed("nix-store --gc --print-roots | grep -q flakeforge/gcroots/")

      with subtest("after a restart the registry serves the digest pulled before"):
          registry.succeed("systemctl restart flakeforge.service")
          registry.wait_for_unit("flakeforge.service")
          registry.wait_for_open_port(5000)
          assert registry.succeed("flakeforge-ca") == ca, "the CA changed across a restart"
          client.succeed(f"docker rmi {digest_ref}")
          client.fail(f"docker image inspect {digest_ref}")
          client.succeed(f"docker pull {digest_ref}")
          out = client.succeed(f"docker run --rm --network none {digest_ref}").strip()
          assert out == f"Hello from flakeforge ({arch})", out
    '';
}

# NixOS VM tests of services.flakeforge with real clients: docker and podman
# pull images the registry builds on demand from vm-tests/test-flake, run
# them, and pull them again by digest across a restart of the registry.
#
# Everything runs without network: the test flake has no inputs and builds
# with a static busybox, both put into the registry's store beforehand.
{ pkgs, self }:
let
  # The served flake with its build tool, as one store path. The flake
  # imports ./tools with builtins.path, so the copy of busybox in there is
  # all a build needs.
  testFlake = pkgs.runCommand "flakeforge-test-flake" { } ''
    mkdir -p $out/tools
    cp ${./test-flake/flake.nix} $out/flake.nix
    cp ${pkgs.pkgsStatic.busybox}/bin/busybox $out/tools/busybox
  '';

  registryNode = import ./registry-node.nix { inherit self testFlake; };
in
{
  vm-docker = pkgs.testers.runNixOSTest (import ./docker.nix { inherit registryNode testFlake; });
  vm-podman = pkgs.testers.runNixOSTest (import ./podman.nix { inherit registryNode testFlake; });
}

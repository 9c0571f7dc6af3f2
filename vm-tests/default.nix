# NixOS VM tests of services.flakeforge with real clients: docker and podman
# pull images the registry builds on demand from vm-tests/test-flake, run
# them, and pull them again by digest across a restart of the registry; in
# the multiarch test the registry serves both systems (the other one built
# under binfmt emulation) and podman pulls the plain name for its own.
#
# Everything runs without network: the test flake has no inputs and builds
# with static busyboxes, all put into the registry's store beforehand.
{ pkgs, self }:
let
  inherit (pkgs) lib;

  system = pkgs.stdenv.hostPlatform.system;

  # The other system of the flake's two, and nixpkgs cross-compiling for it
  # from this one (lib.systems.examples names).
  other =
    {
      x86_64-linux = {
        system = "aarch64-linux";
        pkgs = pkgs.pkgsCross.aarch64-multiplatform;
      };
      aarch64-linux = {
        system = "x86_64-linux";
        pkgs = pkgs.pkgsCross.gnu64;
      };
    }
    .${system};

  # The served flake with its build tools, as one store path: the static
  # busybox of each system in `busyboxes` at tools/<system>/busybox. The
  # flake imports ./tools/<system> with builtins.path, so that copy is all a
  # build for <system> needs.
  mkTestFlake =
    name: busyboxes:
    pkgs.runCommand name { } (
      ''
        mkdir -p $out
        cp ${./test-flake/flake.nix} $out/flake.nix
      ''
      + lib.concatStrings (
        lib.mapAttrsToList (toolsSystem: busybox: ''
          mkdir -p $out/tools/${toolsSystem}
          cp ${busybox}/bin/busybox $out/tools/${toolsSystem}/busybox
        '') busyboxes
      )
    );

  # This system's packages only.
  testFlake = mkTestFlake "flakeforge-test-flake" {
    ${system} = pkgs.pkgsStatic.busybox;
  };
  # Both systems' packages.
  multiarchFlake = mkTestFlake "flakeforge-test-flake-multiarch" {
    ${system} = pkgs.pkgsStatic.busybox;
    ${other.system} = other.pkgs.pkgsStatic.busybox;
  };

  registryNodeFor = testFlake: import ./registry-node.nix { inherit self testFlake; };
  registryNode = registryNodeFor testFlake;
in
{
  vm-docker = pkgs.testers.runNixOSTest (import ./docker.nix { inherit registryNode testFlake; });
  vm-podman = pkgs.testers.runNixOSTest (import ./podman.nix { inherit registryNode testFlake; });
  vm-multiarch = pkgs.testers.runNixOSTest (
    import ./multiarch.nix {
      registryNode = registryNodeFor multiarchFlake;
      testFlake = multiarchFlake;
      otherSystem = other.system;
    }
  );
}

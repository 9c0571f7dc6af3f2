# The `registry` node of the VM tests: services.flakeforge with its
# self-signed CA, serving `flake`, and a Nix that never tries the network.
{ self, testFlake }:
{ flake }:
{ lib, pkgs, ... }:
{
  imports = [ self.nixosModules.flakeforge ];

  services.flakeforge = {
    enable = true;
    inherit flake;
    openFirewall = true;
    tls.mode = "selfSigned";
    tls.hostnames = [ "registry" ];
    logLevel = "info,flakeforge=debug";
  };

  nix.settings = {
    # No binary cache and no global flake registry are reachable here: do
    # not wait for them.
    substituters = lib.mkForce [ ];
    flake-registry = "";
  };

  # Registered in the VM's Nix database: the test flake (with its busyboxes,
  # which the podman test copies into the git repository it serves) and the
  # host system's static busybox itself.
  virtualisation.additionalPaths = [
    testFlake
    pkgs.pkgsStatic.busybox
  ];
  virtualisation.memorySize = 2048;
  virtualisation.diskSize = 2048;

  environment.systemPackages = [
    pkgs.curl
    pkgs.git
  ];
}

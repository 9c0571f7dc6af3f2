# A nix2container image: serve with
#   flakeforge serve --flake github:you/this-repo
# and pull `registry:5000/hello`: the same layer and image IDs as
# `nix run .#hello.copyToDockerDaemon` loads.
{
  description = "A nix2container image served by flakeforge";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
  inputs.nix2container.url = "github:nlewo/nix2container";
  inputs.nix2container.inputs.nixpkgs.follows = "nixpkgs";

  outputs =
    {
      self,
      nixpkgs,
      nix2container,
    }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems f;
    in
    {
      packages = forAllSystems (
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          n2c = nix2container.packages.${system}.nix2container;
          root = pkgs.buildEnv {
            name = "root";
            paths = [ pkgs.busybox ];
            pathsToLink = [ "/bin" ];
          };
        in
        {
          hello = n2c.buildImage {
            name = "hello";
            # Copied to / (a rewrite of its store path), with /bin readable by all.
            copyToRoot = root;
            perms = [
              {
                path = root;
                regex = "/bin";
                mode = "0755";
              }
            ];
            # hello in a layer of its own.
            layers = [ (n2c.buildLayer { deps = [ pkgs.hello ]; }) ];
            config.entrypoint = [ "${pkgs.hello}/bin/hello" ];
          };
        }
      );
    };
}

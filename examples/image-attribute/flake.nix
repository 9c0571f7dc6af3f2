# A package with an image of its own, as nix-forge's packages have: serve with
#   flakeforge serve --flake github:you/this-repo
# and pull `registry:5000/hello`, served from `.#hello.image`.
{
  description = "A package whose image is its `image` attribute";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        hello = pkgs.hello.overrideAttrs (old: {
          passthru = (old.passthru or { }) // {
            image = pkgs.dockerTools.buildImage {
              name = "hello";
              config.Cmd = [ "${pkgs.hello}/bin/hello" ];
            };
          };
        });
      });
    };
}

# A flake for real use: serve it with
#   flakeforge serve --flake github:you/this-repo
# and pull `registry:5000/hello`, `registry:5000/web` or `registry:5000/hello/jq`.
{
  description = "Container images served by flakeforge";

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
        # A plain package: flakeforge splits its closure into layers and adds
        # /bin symlinks; Cmd comes from meta.mainProgram.
        hello = pkgs.hello;
        jq = pkgs.jq;

        # An image defined with dockerTools: flakeforge serves exactly these
        # layers (the same diff_ids as `docker load < $(nix build .#web)`).
        web = pkgs.dockerTools.streamLayeredImage {
          name = "web";
          contents = [ pkgs.busybox ];
          extraCommands = "mkdir -p srv && echo 'hello from flakeforge' > srv/index.html";
          config = {
            Cmd = [
              "${pkgs.busybox}/bin/httpd"
              "-f"
              "-p"
              "8080"
              "-h"
              "/srv"
            ];
            ExposedPorts."8080/tcp" = { };
          };
        };
      });
    };
}

# Docker archives, served as the images they hold: serve with
#   flakeforge serve --flake github:you/this-repo
# and pull `registry:5000/web` or `registry:5000/layered`.
{
  description = "Docker archives served by flakeforge";

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
        # A .tar.gz that `docker load < result` loads: flakeforge serves its
        # layers and its config as they are (the same image ID).
        web = pkgs.dockerTools.buildImage {
          name = "web";
          copyToRoot = pkgs.buildEnv {
            name = "web-root";
            paths = [ pkgs.busybox ];
            pathsToLink = [ "/bin" ];
          };
          config = {
            Cmd = [
              "/bin/httpd"
              "-f"
              "-p"
              "8080"
            ];
            ExposedPorts."8080/tcp" = { };
          };
        };

        # A .tar.gz made from a streamLayeredImage (its `stream`): served from
        # that, layer by layer, without building the archive.
        layered = pkgs.dockerTools.buildLayeredImage {
          name = "layered";
          contents = [ pkgs.hello ];
          config.Cmd = [ "/bin/hello" ];
        };
      });
    };
}

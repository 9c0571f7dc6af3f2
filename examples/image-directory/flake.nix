# A directory of images, as nix-forge's applications have: serve with
#   flakeforge serve --flake github:you/this-repo
# and pull `registry:5000/apps/web`, `registry:5000/apps/worker`, or the same
# images as `registry:5000/myapp/web` and `registry:5000/myapp/worker`.
{
  description = "A directory of images served by flakeforge";

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
      packages = forAllSystems (
        pkgs:
        let
          image =
            name: cmd:
            pkgs.dockerTools.buildImage {
              inherit name;
              copyToRoot = [ pkgs.busybox ];
              config.Cmd = cmd;
            };
          # Each archive is an image, named after its file; other files are ignored.
          apps = pkgs.linkFarm "apps" [
            {
              name = "web.tar.gz";
              path = image "web" [
                "/bin/httpd"
                "-f"
                "-p"
                "8080"
              ];
            }
            {
              name = "worker.tar.gz";
              path = image "worker" [
                "/bin/sh"
                "-c"
                "while sleep 60; do date; done"
              ];
            }
            {
              name = "compose.yaml";
              path = pkgs.writeText "compose.yaml" "services: {}\n";
            }
          ];
        in
        {
          inherit apps;
          # An application whose `containers` is the directory: `myapp` is the
          # package itself, `myapp/web` and `myapp/worker` its images.
          myapp = pkgs.symlinkJoin {
            name = "myapp";
            paths = [ pkgs.busybox ];
            passthru.containers = apps;
          };
        }
      );
    };
}

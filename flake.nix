{
  description = "flakeforge: a container registry that builds images from Nix flakes on demand";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      # f system pkgs, for each system.
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      cargoToml = lib.importTOML ./Cargo.toml;

      # What cargo reads, and nothing else: editing nixos/, vm-tests/, the
      # docs or the examples does not rebuild the package.
      src = lib.fileset.toSource {
        root = ./.;
        fileset = lib.fileset.unions [
          ./Cargo.toml
          ./Cargo.lock
          ./rustfmt.toml
          ./src
          # The service settings `flakeforge systemd-unit` compiles in.
          ./nixos/service.json
          # Integration tests (compiled by clippy --all-targets) and the test
          # helpers and data the unit tests include from there.
          ./tests
          (lib.fileset.maybeMissing ./build.rs)
          (lib.fileset.maybeMissing ./benches)
        ];
      };

      mkFlakeforge =
        pkgs:
        pkgs.rustPlatform.buildRustPackage {
          pname = "flakeforge";
          inherit (cargoToml.package) version;
          inherit src;
          cargoLock.lockFile = ./Cargo.lock;

          nativeBuildInputs = [ pkgs.makeWrapper ];

          # Only the unit tests: the integration tests in tests/ run real
          # `nix` builds against a writable store, start dockerd, podman and
          # skopeo, and need root and loopback servers; none of that exists
          # in the build sandbox. CI runs them (cargo test), and the VM
          # tests in checks run the whole service with real clients.
          cargoTestFlags = [ "--lib" ];

          # flakeforge runs `nix` (eval, build, path-info), and nix runs git
          # for git flakes. The NixOS module passes the system's own nix
          # with --nix; this is the fallback for everyone else.
          postInstall = ''
            wrapProgram $out/bin/flakeforge \
              --prefix PATH : ${
                lib.makeBinPath [
                  pkgs.nix
                  pkgs.git
                ]
              }
          '';

          meta = {
            inherit (cargoToml.package) description;
            license = lib.licenses.mit;
            platforms = lib.platforms.linux;
            mainProgram = "flakeforge";
          };
        };

      # Image helpers for the flakes flakeforge serves: the original
      # flakeforge offered `packages.<system>.flakeforgeTools
      # .streamLayeredImageConf`, so flakes written for it keep working.
      # A `packages` entry must be a derivation (nix flake check), so the
      # helper rides on a small derivation as passthru.
      mkFlakeforgeTools =
        pkgs:
        pkgs.runCommand "flakeforge-tools"
          {
            passthru.streamLayeredImageConf = args: (pkgs.dockerTools.streamLayeredImage args).conf;
            meta.description = "flakeforge image helpers; see passthru.streamLayeredImageConf";
          }
          ''
            mkdir -p $out/share/doc/flakeforge-tools
            cat > $out/share/doc/flakeforge-tools/README <<'EOF'
            flakeforgeTools.streamLayeredImageConf ARGS takes the arguments of
            nixpkgs' dockerTools.streamLayeredImage and returns its conf: the JSON
            description of the image that flakeforge serves layer by layer.
            EOF
          '';
    in
    {
      packages = forAllSystems (
        system: pkgs: {
          flakeforge = mkFlakeforge pkgs;
          default = self.packages.${system}.flakeforge;
          flakeforgeTools = mkFlakeforgeTools pkgs;
        }
      );

      # lib.streamLayeredImageConf.<system> ARGS = the conf of
      # dockerTools.streamLayeredImage ARGS, built with this flake's nixpkgs
      # for <system>. With your own nixpkgs, write
      # (pkgs.dockerTools.streamLayeredImage ARGS).conf instead.
      lib.streamLayeredImageConf = lib.genAttrs systems (
        system: self.packages.${system}.flakeforgeTools.streamLayeredImageConf
      );

      overlays.default = final: prev: {
        flakeforge = mkFlakeforge final;
      };

      nixosModules = {
        flakeforge = {
          _class = "nixos";
          _file = ./flake.nix;
          # Importing both `default` and `flakeforge` imports it once.
          key = "flakeforge#nixosModules.flakeforge";
          imports = [
            ./nixos/module.nix
            (
              { pkgs, lib, ... }:
              {
                # This flake's package; built with the host's nixpkgs on
                # systems this flake has no package for.
                services.flakeforge.package = lib.mkDefault (
                  self.packages.${pkgs.stdenv.hostPlatform.system}.flakeforge or (mkFlakeforge pkgs)
                );
              }
            )
          ];
        };
        default = self.nixosModules.flakeforge;
      };

      checks = forAllSystems (
        system: pkgs:
        let
          package = self.packages.${system}.flakeforge;
          # The package's source, vendored crates and toolchain, with
          # another command in place of build and install.
          cargoCheck =
            name: tool: command:
            package.overrideAttrs (old: {
              pname = "flakeforge-${name}";
              nativeBuildInputs = old.nativeBuildInputs ++ [ tool ];
              buildPhase = ''
                runHook preBuild
                ${command}
                runHook postBuild
              '';
              dontCargoBuild = true;
              doCheck = false;
              dontCargoInstall = true;
              installPhase = "touch $out";
              dontFixup = true;
            });
        in
        {
          # Built with its unit tests.
          inherit package;
          clippy = cargoCheck "clippy" pkgs.clippy "cargo clippy --frozen --all-targets -- -D warnings";
          rustfmt = cargoCheck "rustfmt" pkgs.rustfmt "cargo fmt --all --check";
        }
        // import ./vm-tests { inherit pkgs self; }
      );

      devShells = forAllSystems (
        system: pkgs: {
          default = pkgs.mkShell {
            packages = [
              pkgs.cargo
              pkgs.rustc
              pkgs.clippy
              pkgs.rustfmt
              pkgs.rust-analyzer
              pkgs.nix
              pkgs.git
            ];
            RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
          };
        }
      );

      formatter = forAllSystems (system: pkgs: pkgs.nixfmt);
    };
}

# The flake the NixOS VM tests serve. No inputs and no nixpkgs, so that it
# evaluates and builds inside a VM without network, and anywhere else with
# nothing but Nix: everything for a system is built with a static busybox for
# that system, which the user of this flake puts at ./tools/<system>/busybox
# (./tools/x86_64-linux/busybox, ./tools/aarch64-linux/busybox). A system has
# packages only when its ./tools/<system> exists, so a copy with one
# architecture's busybox serves that architecture alone. The VM tests copy
# pkgsStatic.busybox there, and for the multiarch test the other system's
# from pkgsCross; on Debian, busybox-static's /bin/busybox will do for the
# host's system. Keep the file named `busybox`: it picks its applet from
# argv[0].
#
# An optional ./greeting.txt changes what `hello` says, so that two git
# revisions of this flake serve two different images (the tag test).
#
# Images: `hello`, `motd` and `arch` (each with meta.mainProgram, so Cmd is
# set; `arch` prints `uname -m`, the machine it runs on), `hello/motd`
# composed of `hello` and `motd`, `busybox`.
{
  description = "flakeforge VM test images, built with busybox alone";

  outputs =
    { self }:
    let
      # The systems whose busybox is at hand.
      systems = builtins.filter (system: builtins.pathExists ./tools/${system}) [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems =
        f:
        builtins.listToAttrs (
          map (system: {
            name = system;
            value = f system;
          }) systems
        );

      greeting =
        if builtins.pathExists ./greeting.txt then
          builtins.replaceStrings [ "\n" ] [ "" ] (builtins.readFile ./greeting.txt)
        else
          "Hello from flakeforge";
      # A string as one single-quoted shell word.
      shellQuote = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";
    in
    {
      packages = forAllSystems (
        system:
        let
          tools = builtins.path {
            path = ./tools/${system};
            name = "flakeforge-test-tools-${system}";
          };
          bb = "${tools}/busybox";

          # A derivation built by the busybox shell running `script`.
          run =
            name: script: env:
            derivation (
              {
                inherit name system;
                builder = bb;
                args = [
                  "sh"
                  "-c"
                  ("set -e\n" + script)
                ];
              }
              // env
            );

          busybox = run "busybox" ''
            ${bb} mkdir -p $out/bin
            ${bb} cp ${bb} $out/bin/busybox
            for applet in $(${bb} --list); do
              [ "$applet" = busybox ] || ${bb} ln -s busybox $out/bin/$applet
            done
          '' { };

          # $out/bin/NAME: a busybox sh script running `text`.
          script =
            name: text:
            run name
              ''
                ${bb} mkdir -p $out/bin
                ${bb} printf '#!%s/bin/sh\nPATH=%s/bin\n%s\n' "$busybox" "$busybox" "$text" > $out/bin/${name}
                ${bb} chmod 0555 $out/bin/${name}
              ''
              {
                inherit text;
                busybox = "${busybox}";
              }
            // {
              meta.mainProgram = name;
            };
        in
        {
          inherit busybox;
          hello = script "hello" ''printf '%s (%s)\n' ${shellQuote greeting} "$(uname -m)"'';
          motd = script "motd" ''echo "Nix built me on demand."'';
          arch = script "arch" "uname -m";
        }
      );
    };
}

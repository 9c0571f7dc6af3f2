# The demo flake: no inputs, no nixpkgs. Everything is built with a static
# busybox that scripts/demo.sh copies into ./tools (from Debian's busybox-static).
{
  description = "flakeforge demo images built with busybox alone";

  outputs =
    { self }:
    let
      systems = [
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
      tools = builtins.path {
        path = ./tools;
        name = "demo-tools";
      };
      sh = script: [
        "sh"
        "-c"
        script
      ];
    in
    {
      packages = forAllSystems (
        system:
        let
          busybox = derivation {
            name = "busybox";
            inherit system;
            builder = "${tools}/busybox";
            args = sh ''
              set -e
              PATH=${tools}
              ${tools}/busybox mkdir -p $out/bin
              ${tools}/busybox cp ${tools}/busybox $out/bin/busybox
              for applet in $(${tools}/busybox --list); do
                [ "$applet" = busybox ] || ${tools}/busybox ln -s busybox $out/bin/$applet
              done
            '';
          };
          script =
            name: text:
            derivation {
              inherit name system;
              builder = "${tools}/busybox";
              args = sh ''
                ${tools}/busybox mkdir -p $out/bin
                ${tools}/busybox printf '#!${busybox}/bin/sh\n%s\n' "$text" > $out/bin/${name}
                ${tools}/busybox chmod +x $out/bin/${name}
              '';
              inherit text;
            }
            // {
              meta.mainProgram = name;
            };
        in
        {
          inherit busybox;
          hello = script "hello" ''echo "Hello from a flakeforge image ($(uname -m))"'';
          motd = script "motd" ''echo "Nix built me on demand."'';
        }
      );
    };
}

# The benchmark flake, built with busybox alone. bench/run.sh and
# bench/closure.sh copy this file, a static busybox and params.json into a
# scratch directory.
# - `big`: about SIZE_MIB of incompressible data in PARTS store paths (so its
#   image has several layers).
# - `closure`: a realistic closure, the machine's own files copied into the
#   store, one store path per directory params.json lists (the builds run
#   unsandboxed, as Nix is set up here).
{
  outputs =
    { self }:
    let
      system = "x86_64-linux";
      tools = builtins.path {
        path = ./tools;
        name = "bench-tools";
      };
      params = builtins.fromJSON (builtins.readFile ./params.json);
      part =
        n:
        derivation {
          name = "bench-part-${toString n}";
          inherit system;
          builder = "${tools}/busybox";
          args = [
            "sh"
            "-c"
            ''
              ${tools}/busybox mkdir -p $out
              for f in $(${tools}/busybox seq 1 ${toString params.filesPerPart}); do
                ${tools}/busybox dd if=/dev/urandom of=$out/file-$f bs=1048576 count=${toString params.fileMiB} 2>/dev/null
              done
            ''
          ];
        };
      parts = builtins.genList part params.parts;
      big =
        name:
        derivation {
          inherit name system;
          builder = "${tools}/busybox";
          args = [
            "sh"
            "-c"
            "${tools}/busybox mkdir -p $out/share && ${tools}/busybox echo ${toString parts} > $out/share/parts"
          ];
        };
      corpusPart =
        { name, path }:
        derivation {
          name = "corpus-${name}";
          inherit system;
          builder = "${tools}/busybox";
          args = [
            "sh"
            "-c"
            "${tools}/busybox cp -a ${path} $out"
          ];
        };
      corpus = map corpusPart (params.corpus or [ ]);
      closure = derivation {
        name = "closure";
        inherit system;
        builder = "${tools}/busybox";
        args = [
          "sh"
          "-c"
          "${tools}/busybox mkdir -p $out/share && ${tools}/busybox echo ${toString corpus} > $out/share/parts"
        ];
      };
    in
    {
      packages.${system} = {
        big = big "big";
        # The same content under another name: an image that is not built yet.
        big2 = big "big2";
        inherit closure;
      };
    };
}

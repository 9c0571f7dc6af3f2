//! A test flake with no inputs, written into a scratch directory and built
//! with Debian's static busybox alone (there is no nixpkgs here). It offers
//! plain packages, one with an upper-case name, one large enough for several
//! compression blocks, a nested legacyPackages set, a failing and a sleeping
//! build, and images defined the way nixpkgs' `dockerTools.streamLayeredImage`
//! defines them (a `conf` attribute), one of them on a docker-archive base image.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{require_tool, run_ok, TestDir};

pub struct TestFlake {
    dir: TestDir,
    small: bool,
}

/// Seconds the `slow` package takes to build: longer than the 40 s docker
/// waits for two answers (HEAD, then GET) at the default `--answer-within`.
pub const SLOW_SECONDS: u64 = 50;

/// Seconds the `sleeper` build sleeps: different in every flake, so a test
/// can find its own builder among the processes (`sleep <seconds>`).
fn sleep_seconds(dir: &Path) -> u64 {
    let unique: u64 = dir.to_string_lossy().bytes().fold(7, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    100_000 + unique % 900_000
}

/// What both test flakes start with: `run` (a busybox derivation), `busybox`
/// itself and `script` (a package printing a line). `@SYSTEM@` is the
/// host's system; `tools` holds busybox.
const PRELUDE: &str = r#####"
      system = "@SYSTEM@";
      tools = builtins.path { path = ./tools; name = "test-tools"; };
      bb = "${tools}/busybox";
      run = name: script: extra: derivation ({
        inherit name system;
        builder = bb;
        args = [ "sh" "-c" script ];
      } // extra);
      busybox = run "busybox" ''
        ${bb} mkdir -p $out/bin
        ${bb} cp ${bb} $out/bin/busybox
        for a in $(${bb} --list); do [ $a = busybox ] || ${bb} ln -s busybox $out/bin/$a; done
      '' { };
      # A package whose program prints `line`; `before` runs first in its build.
      scriptAfter = before: name: line: run name ''
        ${before}
        ${bb} mkdir -p $out/bin
        ${bb} printf '#!${busybox}/bin/sh\necho "%s"\n' "$line" > $out/bin/${name}
        ${bb} chmod +x $out/bin/${name}
      '' { inherit line; } // { meta.mainProgram = name; };
      script = scriptAfter "";
"#####;

/// `base`: a docker archive of one layer (a file `base-file`) for images
/// to build on (`from_image`), made with `run` and `busybox`; `@ARCH@` is
/// the host's OCI architecture.
pub const BASE_IMAGE: &str = r#####"      base = run "base-image.tar" ''
        set -e
        PATH=${busybox}/bin
        mkdir -p layer image && echo "from the base image" > layer/base-file
        tar -C layer -cf image/layer.tar base-file
        diff=$(sha256sum image/layer.tar | cut -d' ' -f1)
        printf '{"architecture":"@ARCH@","os":"linux","config":{"Env":["BASE=1","PATH=/base"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' $diff > image/config.json
        printf '[{"Config":"config.json","RepoTags":["base:latest"],"Layers":["layer.tar"]}]' > image/manifest.json
        tar -C image -cf $out manifest.json config.json layer.tar
      '' { };"#####;

/// The host's architecture as OCI names it (`amd64`, `arm64`).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The flake.
const FLAKE: &str = r#####"{
  description = "flakeforge test flake";
  outputs = { self }:
    let
@PRELUDE@
      hello = script "hello" "@HELLO@";
      customisation = run "customisation-layer" ''
        set -e
        PATH=${busybox}/bin
        mkdir -p root/etc $out
        echo "built by a conf" > root/etc/motd
        ln -s ${hello}/bin/hello root/hello
        tar -C root -cf $out/layer.tar etc hello
        sha256sum $out/layer.tar | cut -d' ' -f1 > $out/checksum
      '' { };
@BASE_IMAGE@
      conf = name: extra: run "${name}-conf.json" ''${bb} printf '%s' "$conf" > $out'' {
        conf = builtins.toJSON ({
          architecture = "@ARCH@";
          config = { Cmd = [ "/hello" ]; Env = [ "PATH=${busybox}/bin" "IMAGE=${name}" ]; };
          created = "1970-01-01T00:00:01Z";
          mtime = "1970-01-01T00:00:01Z";
          uid = 0; gid = 0; uname = "root"; gname = "root";
          store_dir = "/nix/store";
          store_layers = [ [ "${busybox}" ] [ "${hello}" ] ];
          customisation_layer = "${customisation}";
          from_image = null;
          repo_tag = "${name}:latest";
        } // extra);
      };
      # As dockerTools.streamLayeredImage: the result has a `conf` attribute.
      image = name: extra: run name "${bb} echo not a script > $out" { } // { conf = conf name extra; };
    in {
      packages.${system} = {
        inherit busybox hello;
        motd = script "motd" "message of the day";
        # A layer of several compression blocks: 11 MB of numbered lines.
        numbers = run "numbers" ''
          ${bb} mkdir -p $out/bin $out/share
          ${bb} seq 1 @NUMBERS@ > $out/share/numbers
          ${bb} printf '#!${busybox}/bin/sh\necho $(${busybox}/bin/wc -l < %s) $(${busybox}/bin/tail -n 1 %s)\n' $out/share/numbers $out/share/numbers > $out/bin/numbers
          ${bb} chmod +x $out/bin/numbers
        '' { } // { meta.mainProgram = "numbers"; };
        Upper = script "upper" "upper case";
        broken = run "broken" "echo flakeforge-test-build-failure >&2; exit 3" { };
        sleeper = run "sleeper" "${bb} sleep @SLEEP@" { };
        # Two quick parts, then @SLOW@ s: a build that outlasts a client's patience.
        slow = run "slow" ''
          ${bb} echo "slow: waiting @SLOW@ s"
          ${bb} sleep @SLOW@
          ${bb} mkdir -p $out/bin
          ${bb} printf '#!${busybox}/bin/sh\necho "slow and steady"\n' > $out/bin/slow
          ${bb} chmod +x $out/bin/slow
        '' { parts = map (n: run "slow-part-${n}" "echo @SLEEP@ > $out" { }) [ "1" "2" ]; } // { meta.mainProgram = "slow"; };
        img = image "img" { };
        based = image "based" { from_image = "${base}"; };
        # As the original flakeforge's streamLayeredImageConf: the output is the conf.
        imgconf = conf "imgconf" { };
      };
      legacyPackages.${system}.tools = {
        jq = script "jq" "not really jq";
      };
    };
}
"#####;

/// A flake of two packages, to build all of it (`--prebuild-all`): `hello`
/// (whose build runs `@HELLO_BUILD@` first) and `motd`, both built anew for
/// every flake (`@SLEEP@` differs): a test sees what it builds itself.
const SMALL_FLAKE: &str = r#####"{
  description = "flakeforge test flake, small";
  outputs = { self }:
    let
@PRELUDE@
    in {
      packages.${system} = {
        hello = scriptAfter "@HELLO_BUILD@ # @SLEEP@" "hello" "@HELLO@";
        motd = scriptAfter "# @SLEEP@" "motd" "message of the day";
      };
    };
}
"#####;

/// Seconds the web flake's `ticker` takes: it prints `tick N` every second,
/// long enough for a browser to watch its log grow.
pub const TICKS: u64 = 40;

/// A flake for the operator's pages: `hello` and `world` (sharing the
/// busybox layer), `broken`, and `ticker`, whose log grows for [`TICKS`]
/// seconds. All built anew for every flake (`@SLEEP@` differs), so that a
/// test sees its own builds.
const WEB_FLAKE: &str = r#####"{
  description = "flakeforge test flake for the web pages";
  outputs = { self }:
    let
@PRELUDE@
    in {
      packages.${system} = {
        hello = scriptAfter "# @SLEEP@" "hello" "@HELLO@";
        world = scriptAfter "# @SLEEP@" "world" "hello, world";
        broken = run "broken" "echo flakeforge-test-build-failure @SLEEP@ >&2; exit 3" { };
        ticker = scriptAfter ''
          for i in $(${bb} seq 1 @TICKS@); do ${bb} echo "tick $i"; ${bb} sleep 1; done # @SLEEP@
        '' "ticker" "ticked";
      };
    };
}
"#####;

/// A flake with packages for x86_64-linux and aarch64-linux, each built
/// with a busybox of its own architecture (arm64 through qemu-user).
const MULTIARCH_FLAKE: &str = r#####"{
  outputs = { self }:
    let
      forSystem = system: tools:
        let
          bb = "${tools}/busybox";
          run = name: script: derivation { inherit name system; builder = bb; args = [ "sh" "-c" script ]; };
          busybox = run "busybox" ''
            ${bb} mkdir -p $out/bin
            ${bb} cp ${bb} $out/bin/busybox
            for a in $(${bb} --list); do [ $a = busybox ] || ${bb} ln -s busybox $out/bin/$a; done
          '';
          arch = run "arch" ''
            ${bb} mkdir -p $out/bin
            ${bb} printf '#!${busybox}/bin/sh\nexec ${busybox}/bin/uname -m\n' > $out/bin/arch
            ${bb} chmod +x $out/bin/arch
          '' // { meta.mainProgram = "arch"; };
        in { inherit busybox arch; };
      x86 = forSystem "x86_64-linux" (builtins.path { path = ./tools-x86_64; name = "tools-x86_64"; });
      arm = forSystem "aarch64-linux" (builtins.path { path = ./tools-aarch64; name = "tools-aarch64"; });
    in {
      packages.x86_64-linux = x86 // {
        onlyx86 = x86.arch;
        brokenonarm = x86.arch;
      };
      packages.aarch64-linux = arm // {
        brokenonarm = derivation { name = "broken"; system = "aarch64-linux"; builder = "/no/such/builder"; };
      };
    };
}
"#####;

/// `text` with `@SYSTEM@` and `@ARCH@` (the OCI architecture) of this machine.
pub fn for_this_machine(text: &str) -> String {
    let system = format!("{}-linux", std::env::consts::ARCH);
    text.replace("@SYSTEM@", &system).replace("@ARCH@", oci_arch())
}

/// Where scripts/install-deps.sh puts Debian's arm64 busybox.
const ARM64_BUSYBOX: &str = "/opt/flakeforge-test/arm64/bin/busybox";

pub const HELLO: &str = "Hello from the flakeforge test flake";

/// How many lines `numbers` has; its program prints the count and the last line.
pub const NUMBERS: u32 = 1_500_000;

/// Fills in the host's system and what `hello` prints.
fn substitute(text: &str, hello: &str) -> String {
    for_this_machine(text).replace("@HELLO@", hello)
}

impl TestFlake {
    pub fn new() -> TestFlake {
        Self::with_hello(HELLO)
    }

    /// The flake, with `hello` printing `line`.
    pub fn with_hello(line: &str) -> TestFlake {
        let flake = Self::with_tools(false);
        flake.write_flake(line);
        flake
    }

    /// A flake of another text (a test flake of its own), with busybox in `tools/` too.
    pub fn with_text(flake_nix: &str) -> TestFlake {
        let flake = Self::with_tools(false);
        fs::write(flake.path().join("flake.nix"), flake_nix).unwrap();
        flake
    }

    /// The web pages' flake ([`WEB_FLAKE`]).
    pub fn web() -> TestFlake {
        let flake = Self::with_tools(false);
        let text = WEB_FLAKE
            .replace("@PRELUDE@", PRELUDE)
            .replace("@TICKS@", &TICKS.to_string())
            .replace("@SLEEP@", &sleep_seconds(flake.path()).to_string());
        fs::write(flake.path().join("flake.nix"), substitute(&text, HELLO)).unwrap();
        flake
    }

    /// The small flake ([`SMALL_FLAKE`]), with `hello` printing `line`.
    pub fn small(line: &str) -> TestFlake {
        let flake = Self::with_tools(true);
        flake.write_small(line, "");
        flake
    }

    fn with_tools(small: bool) -> TestFlake {
        require_tool("nix");
        assert!(Path::new("/bin/busybox").is_file(), "/bin/busybox is missing: install busybox-static");
        let dir = TestDir::new();
        fs::create_dir_all(dir.path().join("tools")).unwrap();
        fs::copy("/bin/busybox", dir.path().join("tools/busybox")).unwrap();
        TestFlake { dir, small }
    }

    /// The small flake with `hello` printing `line`, its build running the shell code `before` first.
    pub fn write_small(&self, line: &str, before: &str) {
        assert!(self.small, "not the small flake");
        let text = SMALL_FLAKE
            .replace("@PRELUDE@", PRELUDE)
            .replace("@HELLO_BUILD@", before)
            .replace("@SLEEP@", &sleep_seconds(self.path()).to_string());
        fs::write(self.path().join("flake.nix"), substitute(&text, line)).unwrap();
    }

    fn write_flake(&self, hello: &str) {
        if self.small {
            return self.write_small(hello, "");
        }
        let text = FLAKE
            .replace("@PRELUDE@", PRELUDE)
            .replace("@BASE_IMAGE@", BASE_IMAGE)
            .replace("@SLEEP@", &sleep_seconds(self.path()).to_string())
            .replace("@SLOW@", &SLOW_SECONDS.to_string())
            .replace("@NUMBERS@", &NUMBERS.to_string());
        fs::write(self.path().join("flake.nix"), substitute(&text, hello)).unwrap();
    }

    /// The two-architecture flake (needs qemu-user for aarch64 builds).
    pub fn multiarch() -> TestFlake {
        require_tool("nix");
        assert!(Path::new(ARM64_BUSYBOX).is_file(), "{ARM64_BUSYBOX} is missing: run scripts/install-deps.sh");
        assert!(
            Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists(),
            "qemu-aarch64 is not registered with binfmt_misc: run scripts/install-deps.sh"
        );
        let dir = TestDir::new();
        for (arch, busybox) in [("x86_64", "/bin/busybox"), ("aarch64", ARM64_BUSYBOX)] {
            fs::create_dir_all(dir.path().join(format!("tools-{arch}"))).unwrap();
            fs::copy(busybox, dir.path().join(format!("tools-{arch}/busybox"))).unwrap();
        }
        fs::write(dir.path().join("flake.nix"), MULTIARCH_FLAKE).unwrap();
        TestFlake { dir, small: false }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// What `ps` shows of this flake's `sleeper` builder.
    pub fn sleeper_command(&self) -> String {
        format!("sleep {}", sleep_seconds(self.path()))
    }

    pub fn path_buf(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn git(&self, args: &[&str]) -> String {
        require_tool("git");
        run_ok(
            Command::new("git")
                .args([
                    "-c",
                    "user.name=test",
                    "-c",
                    "user.email=test@example.invalid",
                    "-c",
                    "init.defaultBranch=main",
                ])
                .args(args)
                .current_dir(self.path()),
            30,
        )
    }

    /// Makes the flake a git repository with one commit, tagged `v1`.
    pub fn init_git(&self) {
        self.git(&["init", "-q"]);
        self.commit("first");
        self.git(&["tag", "v1"]);
    }

    /// Changes what `hello` prints and commits it; returns the new commit.
    pub fn commit_hello(&self, line: &str) -> String {
        self.write_flake(line);
        self.commit(line)
    }

    /// The small flake's `hello` printing `line`, its build running `before` first, committed.
    pub fn commit_small(&self, line: &str, before: &str) -> String {
        self.write_small(line, before);
        self.commit(line)
    }

    /// A bare repository cloned from this one (inside it, ignored), with
    /// `contrib/git-hooks/post-receive` installed: what a git server pushed
    /// to looks like. This repository pushes there ([`TestFlake::push`]).
    pub fn bare_clone_with_hook(&self) -> PathBuf {
        let bare = self.path().join("served.git");
        fs::write(self.path().join(".gitignore"), "served.git/\n").unwrap();
        self.git(&["clone", "-q", "--bare", ".", bare.to_str().unwrap()]);
        let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/git-hooks/post-receive");
        fs::copy(hook, bare.join("hooks/post-receive")).unwrap();
        self.git(&["remote", "add", "served", bare.to_str().unwrap()]);
        bare
    }

    /// Tells the bare clone's hook where the registry is, as the hook's doc says.
    pub fn set_hook_url(&self, url: &str) {
        self.git(&["-C", "served.git", "config", "flakeforge.url", url]);
    }

    /// Pushes the current branch to the bare clone, with `env` for its hook;
    /// git's output, the hook's included.
    pub fn push(&self, env: &[(&str, &str)]) -> String {
        require_tool("git");
        let mut push = Command::new("git");
        push.args(["push", "served", "HEAD"]).current_dir(self.path()).envs(env.iter().copied());
        let (ok, output) = super::run_capture(&mut push, 60);
        assert!(ok, "git push failed: {output}");
        output
    }

    /// Commits everything in the flake's directory; returns the new commit.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// `nix build` of an attribute here; its output path.
    pub fn build(&self, attr: &str) -> PathBuf {
        let out = run_ok(
            Command::new("nix")
                .args(["build", "--no-link", "--json"])
                .arg(format!("{}#{attr}", self.path().display()))
                .env("NIX_CONFIG", super::NIX_CONFIG),
            300,
        );
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        PathBuf::from(json[0]["outputs"]["out"].as_str().unwrap())
    }
}

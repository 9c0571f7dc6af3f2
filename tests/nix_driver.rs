//! The Nix driver against the real `nix` (Debian's Nix 2.8 on the test
//! machines): flakes without inputs, generated in temp dirs, whose builders
//! are busybox-static copied into the flake. Nix's settings come from
//! `NIX_CONFIG` in the environment the tests hand down to it; a missing `nix`
//! fails the tests. Every nix call is bounded by the driver's timeout.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flakeforge::nix::attr::{self, Package};
use flakeforge::nix::log::{Event, Progress};
use flakeforge::nix::scheduler::{Lane, Observer, SchedulerOptions, Work};
use flakeforge::nix::{flakeref, json, Nix, NixError};

#[path = "common/test_dir.rs"]
mod test_dir;
use test_dir::TestDir;

const NIX_CONFIG: &str = "experimental-features = nix-command flakes
sandbox = false
build-users-group =
substituters =";

fn system() -> String {
    format!("{}-linux", std::env::consts::ARCH)
}

fn nix_with_timeout(timeout: Duration) -> Nix {
    static CONFIGURED: OnceLock<()> = OnceLock::new();
    // Set once, before any test has spawned anything: the children inherit it.
    CONFIGURED.get_or_init(|| std::env::set_var("NIX_CONFIG", NIX_CONFIG));
    Nix::new("nix", timeout, &SchedulerOptions::default())
}

fn nix() -> Nix {
    nix_with_timeout(Duration::from_secs(120))
}

/// A flake in a temp dir, removed on drop. `outputs` is the body of the
/// flake's outputs, with `mk name script` (a derivation whose builder runs
/// `script` in busybox sh) and `system` in scope.
struct TestFlake {
    /// Inside `scratch`, removed with it.
    dir: PathBuf,
    _scratch: TestDir,
}

impl TestFlake {
    fn new(test: &str, outputs: &str) -> Self {
        let scratch = TestDir::new();
        let dir = scratch.path().join(test);
        fs::create_dir_all(dir.join("tools")).unwrap();
        fs::copy("/bin/busybox", dir.join("tools/busybox")).expect("busybox-static is installed");
        let flake = TestFlake { dir, _scratch: scratch };
        flake.write_outputs(outputs);
        flake
    }

    fn write_outputs(&self, outputs: &str) {
        let flake_nix = format!(
            r#"{{
  outputs = {{ self }}: let
    system = "{system}";
    tools = builtins.path {{ path = ./tools; name = "tools"; }};
    mk = name: script: derivation {{
      inherit name system;
      builder = "${{tools}}/busybox";
      args = [ "sh" "-c" script ];
    }};
  in {outputs};
}}
"#,
            system = system()
        );
        fs::write(self.dir.join("flake.nix"), flake_nix).unwrap();
    }

    fn path_ref(&self) -> String {
        format!("path:{}", self.dir.display())
    }

    fn installable(&self, attr_path: &str) -> String {
        format!("{}#{attr_path}", self.path_ref())
    }

    fn resolve(&self, name: &str) -> Result<Package, NixError> {
        let nix = nix();
        attr::resolve(&nix, &nix.lock(&self.path_ref())?, &system(), name)
    }

    fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(["-c", "user.name=flakeforge", "-c", "user.email=flakeforge@example.invalid"])
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }
}

#[test]
fn build_gives_the_output_and_a_gc_root() {
    let flake =
        TestFlake::new("build", r#"{ packages.${system}.hello = mk "hello" "mkdir $out; echo hi > $out/hi"; }"#);
    let out_link = flake.dir.join("result");
    let outputs = nix().build(&flake.installable(&format!("packages.{}.hello", system())), &out_link).unwrap();

    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert!(outputs[0].to_string_lossy().ends_with("-hello"), "{outputs:?}");
    assert_eq!(fs::read_to_string(outputs[0].join("hi")).unwrap(), "hi\n");
    assert_eq!(fs::read_link(&out_link).unwrap(), outputs[0]);
    let gc_roots = fs::read_dir("/nix/var/nix/gcroots/auto").unwrap();
    let is_root = gc_roots.flatten().any(|root| fs::read_link(root.path()).is_ok_and(|target| target == out_link));
    assert!(is_root, "{} is no GC root", out_link.display());
}

#[test]
fn a_failed_build_gives_the_end_of_its_log() {
    let flake = TestFlake::new(
        "fail",
        r#"{ packages.${system}.fail = mk "fail" "for i in $(seq 100); do echo line $i; done; echo oops >&2; exit 3"; }"#,
    );
    let error = nix().build(&flake.installable(&format!("packages.{}.fail", system())), &flake.dir.join("result"));
    let Err(error @ NixError::Failed { .. }) = error else { panic!("{error:?}") };
    let log_tail = error.log_tail();
    assert!(log_tail.contains("fail> oops") && log_tail.contains("exit code 3"), "{log_tail}");
    assert!(log_tail.lines().count() <= 30 && log_tail.len() <= 4096, "{log_tail}");
    // What a client may see: why, without the builder's output or paths.
    assert_eq!(error.client_reason(), "builder for 'fail.drv' failed with exit code 3");
    assert!(!flake.dir.join("result").exists());
}

#[test]
fn a_build_past_the_timeout_is_killed_with_its_builder() {
    let flake = TestFlake::new("timeout", "");
    let pid_file = flake.dir.join("builder.pid");
    let script = format!("echo $$ > {}; echo sleeping; sleep 1000", pid_file.display());
    flake.write_outputs(&format!(r#"{{ packages.${{system}}.sleeper = mk "sleeper" "{script}"; }}"#));

    let started = Instant::now();
    let nix = nix_with_timeout(Duration::from_secs(4));
    let error = nix.build(&flake.installable(&format!("packages.{}.sleeper", system())), &flake.dir.join("result"));
    let elapsed = started.elapsed();

    let Err(NixError::Timeout { secs: 4, log_tail, .. }) = error else { panic!("{error:?}") };
    assert!(log_tail.contains("sleeper.drv"), "{log_tail}");
    assert!(elapsed >= Duration::from_secs(4) && elapsed < Duration::from_secs(9), "{elapsed:?}");
    // The builder runs in a session of its own (nix calls setsid): it must be
    // gone too, not only nix's group.
    let builder_group: i32 = fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let flake_dir = flake.dir.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(3);
    while (live_in_group(builder_group) || live_mentioning(&flake_dir)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!live_in_group(builder_group), "the builder's process group is still running");
    assert!(!live_mentioning(&flake_dir), "nix is still running");
}

/// `(pid, process group, command line)` of every process that is not a zombie.
fn live_processes() -> Vec<(i32, i32, String)> {
    let mut processes = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        // After the parenthesised command: state, ppid, pgrp.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        let (Some(&state), Some(pgrp)) = (fields.first(), fields.get(2).and_then(|f| f.parse().ok())) else { continue };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if state != "Z" {
            processes.push((pid, pgrp, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    processes
}

fn live_in_group(group: i32) -> bool {
    live_processes().iter().any(|(_, pgrp, _)| *pgrp == group)
}

fn live_mentioning(text: &str) -> bool {
    let me = std::process::id() as i32;
    live_processes().iter().any(|(pid, _, cmdline)| *pid != me && cmdline.contains(text))
}

#[test]
fn closure_lists_runtime_dependencies_in_both_json_shapes() {
    let flake = TestFlake::new(
        "closure",
        r#"{ packages.${system} = rec {
            lib = mk "lib" "mkdir $out; echo lib > $out/data";
            app = mk "app" "mkdir $out; echo ${lib}/data > $out/uses";
        }; }"#,
    );
    let nix = nix();
    let outputs =
        nix.build(&flake.installable(&format!("packages.{}.app", system())), &flake.dir.join("result")).unwrap();
    let closure = nix.closure(&outputs).unwrap();

    assert_eq!(closure.len(), 2, "{closure:?}");
    let app = closure.iter().find(|info| info.path == outputs[0]).unwrap();
    let lib = closure.iter().find(|info| info.path != outputs[0]).unwrap();
    assert!(lib.path.to_string_lossy().ends_with("-lib"));
    assert_eq!(app.references, vec![lib.path.clone()]);
    assert!(lib.references.is_empty() && lib.nar_size > 0 && app.nar_size > 0);

    // The same output in the object shape of Nix 2.19 and later.
    let printed = Command::new("nix").args(["path-info", "--recursive", "--json"]).arg(&outputs[0]).output().unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_slice(&printed.stdout).unwrap();
    let by_path: serde_json::Map<String, serde_json::Value> =
        list.into_iter().map(|info| (info["path"].as_str().unwrap().to_owned(), info)).collect();
    let reshaped = serde_json::to_vec(&by_path).unwrap();
    assert_eq!(json::path_infos(&printed.stdout, Path::new("/nix/store")).unwrap(), closure);
    assert_eq!(json::path_infos(&reshaped, Path::new("/nix/store")).unwrap(), closure);
}

#[test]
fn closure_of_a_missing_path_is_an_error() {
    let missing = PathBuf::from("/nix/store/00000000000000000000000000000000-flakeforge-missing");
    let error = nix().closure(&[missing]).unwrap_err();
    assert!(matches!(error, NixError::Failed { .. } | NixError::Output(_)), "{error:?}");
    assert!(nix().closure(&[]).unwrap().is_empty());
}

const PACKAGES: &str = r#"{
    packages.${system} = {
        Hello = mk "hello" "mkdir $out";
        cowsay = mk "cowsay" "mkdir $out";
        Cowsay = mk "Cowsay" "mkdir $out";
        "7zip" = mk "7zip" "mkdir $out";
        app = (mk "app" "mkdir $out") // { meta.mainProgram = "app-bin"; };
        image = (mk "image" "mkdir $out") // { conf = mk "conf" "echo {} > $out"; };
        notapackage = { x = 1; };
        broken = throw "this package is broken";
    };
    packages.other-system.only-other = mk "only-other" "mkdir $out";
    legacyPackages.${system} = {
        only-legacy = mk "only-legacy" "mkdir $out";
        python3Packages.requests = mk "requests" "mkdir $out";
        notapackage = mk "notapackage" "mkdir $out";
    };
}"#;

#[test]
fn resolve_finds_packages_by_name() {
    let flake = TestFlake::new("resolve", PACKAGES);
    let sys = system();
    let resolved = |name: &str| flake.resolve(name).unwrap();

    assert_eq!(resolved("cowsay").attr_path, format!("packages.{sys}.cowsay"));
    assert_eq!(resolved("hello").attr_path, format!("packages.{sys}.Hello"));
    assert_eq!(resolved("only-legacy").attr_path, format!("legacyPackages.{sys}.only-legacy"));
    assert_eq!(
        resolved("python3packages.requests").attr_path,
        format!("legacyPackages.{sys}.python3Packages.requests")
    );
    // A package set in `packages` is no package; the one in legacyPackages is.
    assert_eq!(resolved("notapackage").attr_path, format!("legacyPackages.{sys}.notapackage"));

    let quoted = resolved("7zip");
    assert_eq!(quoted.attr_path, format!("packages.{sys}.\"7zip\""));
    let outputs = nix().build(&flake.installable(&quoted.attr_path), &flake.dir.join("result")).unwrap();
    assert!(outputs[0].to_string_lossy().ends_with("-7zip"));
}

#[test]
fn legacy_packages_can_be_left_out_of_lookups() {
    let flake = TestFlake::new("resolve-no-legacy", PACKAGES);
    let nix = nix().with_lookup(attr::LookupOptions { legacy_packages: false });
    let locked = nix.lock(&flake.path_ref()).unwrap();
    let resolve = |name: &str| attr::resolve(&nix, &locked, &system(), name);
    assert_eq!(resolve("cowsay").unwrap().attr_path, format!("packages.{}.cowsay", system()));
    for name in ["only-legacy", "python3packages.requests", "notapackage"] {
        assert!(matches!(resolve(name), Err(NixError::AttrNotFound { .. })), "{name}: {:?}", resolve(name));
    }
}

#[test]
fn resolve_reports_conf_and_main_program() {
    let flake = TestFlake::new("resolve-info", PACKAGES);
    let app = flake.resolve("app").unwrap();
    assert_eq!((app.has_conf, app.main_program.as_deref()), (false, Some("app-bin")));
    let image = flake.resolve("image").unwrap();
    assert_eq!((image.has_conf, image.main_program), (true, None));
}

#[test]
fn resolve_tells_missing_attributes_from_broken_ones() {
    let flake = TestFlake::new("resolve-missing", PACKAGES);
    for name in ["nope", "only-other", "python3packages.nope", "python3packages", "hello.world"] {
        let error = flake.resolve(name).unwrap_err();
        assert!(matches!(&error, NixError::AttrNotFound { name: n, .. } if n == name), "{name}: {error:?}");
    }
    let error = flake.resolve("broken").unwrap_err();
    assert!(
        matches!(&error, NixError::Failed { log_tail, .. } if log_tail.contains("this package is broken")),
        "{error:?}"
    );
    assert_eq!(error.client_reason(), "this package is broken");
}

#[test]
fn resolve_in_flakes_without_package_sets() {
    let legacy_only =
        TestFlake::new("resolve-legacy-only", r#"{ legacyPackages.${system}.hello = mk "hello" "mkdir $out"; }"#);
    assert_eq!(legacy_only.resolve("hello").unwrap().attr_path, format!("legacyPackages.{}.hello", system()));

    let neither = TestFlake::new("resolve-neither", r#"{ lib.x = 1; }"#);
    assert!(matches!(neither.resolve("hello"), Err(NixError::AttrNotFound { .. })));

    let broken = TestFlake::new("resolve-broken", r#"{ packages = throw "no packages today"; }"#);
    let error = broken.resolve("hello").unwrap_err();
    assert!(matches!(&error, NixError::Failed { log_tail, .. } if log_tail.contains("no packages today")), "{error:?}");
}

#[test]
fn tags_select_git_refs_of_a_real_flake() {
    let flake = TestFlake::new("git", r#"{ packages.${system}.hello = mk "hello-1" "mkdir $out"; }"#);
    flake.git(&["init", "--quiet"]);
    flake.git(&["add", "."]);
    flake.git(&["commit", "--quiet", "-m", "one"]);
    flake.git(&["tag", "v1"]);
    let first = flake.git(&["rev-parse", "HEAD"]);
    flake.write_outputs(r#"{ packages.${system}.hello = mk "hello-2" "mkdir $out"; }"#);
    flake.git(&["commit", "--quiet", "-am", "two"]);

    let dir = flake.dir.to_string_lossy().into_owned();
    let name_at = |tag: &str| {
        let tagged = nix().lock(&flakeref::for_tag(&dir, tag)?)?;
        let package = attr::resolve(&nix(), &tagged, &system(), "hello")?;
        nix().eval_json(&format!("{tagged}#{}", package.attr_path), "x: x.name")
    };
    assert_eq!(flakeref::for_tag(&dir, "v1").unwrap(), format!("git+file://{dir}?ref=v1"));
    assert_eq!(name_at("latest").unwrap(), "hello-2");
    assert_eq!(name_at("v1").unwrap(), "hello-1");
    assert_eq!(name_at(&first).unwrap(), "hello-1");
    assert!(matches!(name_at("v9"), Err(NixError::Failed { .. })));
}

#[test]
fn lock_pins_git_commits_and_path_nar_hashes() {
    let flake = TestFlake::new("lock", r#"{ packages.${system}.hello = mk "hello-1" "mkdir $out"; }"#);
    let path = nix().lock(&flake.path_ref()).unwrap();
    assert!(path.revision.starts_with("sha256-"), "{path:?}");
    assert!(path.url.starts_with(&flake.path_ref()) && path.url.contains("narHash="), "{path:?}");
    flake.write_outputs(r#"{ packages.${system}.hello = mk "hello-2" "mkdir $out"; }"#);
    let changed = nix().lock(&flake.path_ref()).unwrap();
    assert_ne!(changed.revision, path.revision);

    flake.git(&["init", "--quiet"]);
    flake.git(&["add", "."]);
    flake.git(&["commit", "--quiet", "-m", "one"]);
    let commit = flake.git(&["rev-parse", "HEAD"]);
    let dir = flake.dir.to_string_lossy().into_owned();
    let git = nix().lock(&dir).unwrap();
    assert_eq!(git.revision, commit);
    assert!(git.url.starts_with("git+file://") && git.url.contains(&format!("rev={commit}")), "{git:?}");
    // What was locked is what is evaluated, whatever comes next.
    flake.write_outputs(r#"{ packages.${system}.hello = mk "hello-3" "mkdir $out"; }"#);
    flake.git(&["commit", "--quiet", "-am", "two"]);
    let hello = attr::resolve(&nix(), &git, &system(), "hello").unwrap();
    assert_eq!(nix().eval_json(&format!("{git}#{}", hello.attr_path), "x: x.name").unwrap(), "hello-2");
    assert_ne!(nix().lock(&dir).unwrap().revision, commit);
}

/// What a build job sees of its invocations.
#[derive(Default)]
struct Seen {
    started: std::sync::Mutex<Vec<(Lane, String)>>,
    events: std::sync::Mutex<Vec<Event>>,
}

impl Observer for Seen {
    fn queued(&self, _: u64, _: Lane) {}
    fn started(&self, _: u64, lane: Lane, command: &str) {
        self.started.lock().unwrap().push((lane, command.to_owned()));
    }
    fn event(&self, _: u64, event: &Event) {
        if *event != Event::Nothing {
            self.events.lock().unwrap().push(event.clone());
        }
    }
}

#[test]
fn a_build_reports_its_progress_and_its_output() {
    // Derivations no earlier run has built: the nonce differs every time.
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let flake = TestFlake::new(
        "progress",
        &r#"{ packages.${system} = rec {
            one = mk "one" "echo first >&2; echo NONCE; mkdir $out";
            two = mk "two" "echo NONCE; mkdir $out";
            top = mk "top" "echo ${one} ${two}; echo said-by-top; mkdir $out";
        }; }"#
            .replace("NONCE", &nonce.to_string()),
    );
    let seen = std::sync::Arc::new(Seen::default());
    let work = std::sync::Arc::new(Work::job(None, seen.clone()));
    let nix = nix().for_work(work);
    nix.build(&flake.installable(&format!("packages.{}.top", system())), &flake.dir.join("result")).unwrap();

    let started = seen.started.lock().unwrap();
    assert_eq!(started.len(), 1);
    assert!(started[0].0 == Lane::Build && started[0].1.starts_with("nix build --json"), "{started:?}");
    let events = seen.events.lock().unwrap();
    let last_progress = events.iter().rev().find_map(|e| match e {
        Event::Progress(progress) => Some(*progress),
        _ => None,
    });
    assert_eq!(last_progress, Some(Progress { built: 3, total: 3 }), "{events:?}");
    let lines: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Line(line) => Some(line.as_str()),
            _ => None,
        })
        .collect();
    assert!(lines.contains(&"one> first") && lines.contains(&"top> said-by-top"), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("building '/nix/store/") && l.ends_with("-top.drv'")), "{lines:?}");
}

#[test]
fn tags_of_a_flake_outside_git_are_refused() {
    let flake = TestFlake::new("no-git", "{ }");
    let error = flakeref::for_tag(&flake.dir.to_string_lossy(), "v1").unwrap_err();
    assert!(matches!(error, NixError::NoRefs { .. }), "{error:?}");
}

#[test]
fn a_missing_nix_is_a_spawn_error() {
    let nix = Nix::new("/nonexistent/nix", Duration::from_secs(5), &SchedulerOptions::default());
    assert!(matches!(nix.eval_json("path:/x#y", "x: x"), Err(NixError::Spawn(_))));
}

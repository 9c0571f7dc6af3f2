//! Ready before the pull: a slow first build answered inside every client's
//! deadline while the build goes on without them; images built ahead and
//! rebuilt when the flake moves, the previous image served meanwhile;
//! failures remembered for a while; a restart that builds nothing that did
//! not change. Real Nix, real clients; one slow build serves many checks.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::clients::{Containerd, Dockerd, Podman};
use common::flake::SLOW_SECONDS;
use common::server::{read_response, HttpResponse};
use common::{wait_until, FlakeforgeServer, TestFlake};

/// A client as containerd 2.3 and later are: it gives up on a request that
/// has no response headers after 30 s.
fn patient_get(addr: SocketAddr, path: &str) -> (HttpResponse, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/vnd.oci.image.index.v1+json\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader, false);
    (response, started.elapsed())
}

/// The one build listed for `image`, once it is in `state`.
fn wait_for_build(server: &FlakeforgeServer, image: &str, trigger: &str, state: &str, secs: u64) -> serde_json::Value {
    let mut found = None;
    wait_until(secs, &format!("a {trigger} build of {image} to be {state}"), || {
        found = server.builds_of(image).into_iter().find(|b| b["trigger"] == trigger && b["state"] == state);
        found.is_some()
    });
    found.unwrap()
}

/// Reads `/-/builds/<id>/log` while the build runs: the part there is now, then all of it at the end.
fn follow_log(server: &FlakeforgeServer, id: &str, first: &str) -> std::thread::JoinHandle<String> {
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(stream, "GET /-/builds/{id}/log HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut seen = String::new();
    while !seen.contains(first) {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the log ended before {first:?}: {seen}");
        seen.push_str(&line);
    }
    std::thread::spawn(move || {
        reader.read_to_string(&mut seen).unwrap();
        seen
    })
}

#[test]
fn a_slow_first_pull_is_answered_in_time_and_the_build_outlives_its_clients() {
    std::thread::scope(|scope| {
        scope.spawn(slow_build_with_the_default_deadline);
        scope.spawn(slow_build_with_a_short_deadline);
    });
}

/// `--answer-within` 20 (the default): a client that waits 30 s for headers
/// gets the retryable answer in time, docker shows it, the build ends with
/// no client connected, and the next pull gets the image without building.
fn slow_build_with_the_default_deadline() {
    let flake = TestFlake::new();
    // The default, said out loud: the harness waits for builds otherwise.
    let server = FlakeforgeServer::start(flake.path(), &["--answer-within", "20"]);
    let docker = Dockerd::start();
    let image = format!("{}/slow", server.host());
    let (raw, pulled) = std::thread::scope(|scope| {
        let raw = scope.spawn(|| patient_get(server.addr(), "/v2/slow/manifests/latest"));
        let docker = scope.spawn(|| docker.try_docker(&["pull", &image]));
        wait_until(30, "the slow build to be listed", || !server.builds_of("slow").is_empty());
        let id = server.builds_of("slow")[0]["id"].as_str().unwrap().to_string();
        let log = follow_log(&server, &id, "slow> slow: waiting");
        (raw.join().unwrap(), (docker.join().unwrap(), log))
    });

    let (response, elapsed) = raw;
    eprintln!("a client waiting 30 s for headers was answered after {elapsed:.1?}");
    assert!(elapsed < Duration::from_secs(25), "answered after {elapsed:?}");
    assert_eq!((response.status, response.error_code().as_str()), (429, "TOOMANYREQUESTS"));
    assert_eq!(response.header("retry-after"), Some("5"));
    let message = response.error_message();
    let system = format!("{}-linux", std::env::consts::ARCH);
    let id = server.builds_of("slow")[0]["id"].as_str().unwrap().to_string();
    for part in [
        format!("slow:latest for {system} is being built"),
        format!("build {id}"),
        "s so far, 2 of 3 derivations built".into(),
        "try again shortly".into(),
    ] {
        assert!(message.contains(&part), "{part:?} is not in {message:?}");
    }
    // containerd shows the status line of an answer to HEAD: the message is there too.
    assert_eq!(response.reason, format!("Too Many Requests: {message}"));

    let ((ok, output), log) = pulled;
    assert!(!ok, "docker pulled an image that was still building: {output}");
    assert!(output.contains("toomanyrequests") && output.contains("slow:latest"), "{output}");
    assert!(output.contains("is being built") && output.contains(&format!("build {id}")), "{output}");

    // No client waits now; the build goes on to its end.
    let build = wait_for_build(&server, "slow", "client", "succeeded", SLOW_SECONDS + 120);
    assert_eq!(build["progress"], serde_json::json!({ "built": 3, "total": 3 }));
    assert_eq!(build["systems"], serde_json::json!([system]));
    assert!(build["duration_secs"].as_f64().unwrap() >= SLOW_SECONDS as f64, "{build}");
    assert!(build["digest"].as_str().unwrap().starts_with("sha256:"), "{build}");
    let log = log.join().unwrap();
    assert!(log.contains("slow> slow: waiting") && log.contains("done: sha256:"), "{log}");

    // The next pull gets the image at once, with no second build.
    let builds = server.nix_builds();
    docker.docker(&["pull", "-q", &image]);
    assert_eq!(docker.docker(&["run", "--rm", "--network", "none", &image]).trim(), "slow and steady");
    assert_eq!(server.nix_builds(), builds, "the pull ran nix build again");
    assert_eq!(server.builds_of("slow").len(), 1);
    let slow_builds = server.log().lines().filter(|l| l.contains("nix build ") && l.contains(".slow: done")).count();
    assert_eq!(slow_builds, 1, "{}", server.log());
}

/// `--answer-within 3`: podman shows the message while it retries and then
/// pulls; ctr fails with it first and pulls it on a later attempt.
fn slow_build_with_a_short_deadline() {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start(flake.path(), &["--answer-within", "3"]);
    let podman = Podman::new();
    let containerd = Containerd::start();
    let image = format!("{}/slow:latest", server.host());
    std::thread::scope(|scope| {
        let podman = scope.spawn(|| podman.try_run(&["pull", "--tls-verify=false", &image]));
        let (ok, first) = containerd.try_ctr(&["images", "pull", "--plain-http", &image]);
        assert!(!ok, "ctr pulled an image that was still building: {first}");
        assert!(first.contains("429 Too Many Requests: slow:latest") && first.contains("is being built"), "{first}");
        let deadline = Instant::now() + Duration::from_secs(SLOW_SECONDS + 120);
        loop {
            std::thread::sleep(Duration::from_secs(5));
            let (ok, output) = containerd.try_ctr(&["images", "pull", "--plain-http", &image]);
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "ctr never pulled the image: {output}");
        }
        assert_eq!(containerd.run(&image, "slow-test").trim(), "slow and steady");

        let (ok, output) = podman.join().unwrap();
        assert!(ok, "podman did not pull the image once it was built: {output}");
        assert!(output.contains("toomanyrequests: slow:latest") && output.contains("is being built"), "{output}");
    });
    assert_eq!(server.builds_of("slow").len(), 1, "{}", server.builds());
}

#[test]
fn prebuilt_images_follow_the_flake_and_the_previous_image_serves_meanwhile() {
    let flake = TestFlake::small("first");
    flake.init_git();
    let server = FlakeforgeServer::start(flake.path(), &["--prebuild-all", "--watch-interval", "2"]);
    let podman = Podman::new();
    let run = |image: &str| {
        let image = format!("{}/{image}", server.host());
        podman.run(&["run", "--rm", "--pull=always", "--tls-verify=false", &image]).trim().to_string()
    };

    // Without any client, every package is built.
    wait_for_build(&server, "hello", "prebuild", "succeeded", 120);
    wait_for_build(&server, "motd", "prebuild", "succeeded", 120);
    let builds = server.nix_builds();
    assert_eq!(run("hello"), "first");
    assert_eq!(run("motd"), "message of the day");
    assert_eq!(server.nix_builds(), builds, "a pull of a prebuilt image ran nix build");

    // A commit changes hello (its build now takes a while): the watch rebuilds it, no client asks.
    flake.commit_small("second", "${bb} sleep 12");
    wait_for_build(&server, "hello", "watch", "running", 60);
    assert_eq!(run("hello"), "first", "while the new image builds, the previous one is served");
    let rebuilt = wait_for_build(&server, "hello", "watch", "succeeded", 120);
    assert_eq!(rebuilt["progress"]["built"], rebuilt["progress"]["total"]);
    assert!(rebuilt["progress"]["total"].as_u64().unwrap() >= 1, "{rebuilt}");
    let (builds, listed) = (server.nix_builds(), server.builds()["builds"].as_array().unwrap().len());
    assert_eq!(run("hello"), "second");
    assert_eq!(server.nix_builds(), builds, "the first pull after the rebuild ran nix build");
    assert_eq!(server.builds()["builds"].as_array().unwrap().len(), listed);

    // A commit that breaks hello: the failure is listed, the last image stays.
    flake.commit_small("third", "echo hello is broken on purpose >&2; exit 1");
    let failed = wait_for_build(&server, "hello", "watch", "failed", 120);
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("builder for 'hello.drv' failed with exit code 1"), "{failed}");
    assert!(failed["log_tail"].to_string().contains("hello is broken on purpose"), "{failed}");
    assert_eq!(run("hello"), "second");
}

#[test]
fn failures_and_unknown_names_are_remembered_for_the_negative_ttl() {
    let flake = TestFlake::new();
    flake.init_git();
    let server = FlakeforgeServer::start(flake.path(), &["--negative-ttl", "6"]);
    let started = || server.builds()["nix"]["started"].as_u64().unwrap();
    let get = |path: &str| server.get(path);

    // 50 requests for an unknown name, at once and then one by one: Nix runs for the first only.
    let before = started();
    let answers: Vec<HttpResponse> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..25).map(|_| scope.spawn(|| get("/v2/nosuchthing/manifests/latest"))).collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let once = started() - before;
    eprintln!("25 concurrent requests for an unknown name ran {once} nix processes");
    assert!((1..=5).contains(&once), "one lookup ran {once} nix processes");
    for _ in 0..25 {
        let answer = get("/v2/nosuchthing/manifests/latest");
        assert_eq!((answer.status, answer.error_code().as_str()), (404, "NAME_UNKNOWN"));
    }
    assert!(answers.iter().all(|a| a.status == 404 && a.error_code() == "NAME_UNKNOWN"));
    assert_eq!(started() - before, once, "asking again ran Nix again");

    // An unknown git ref: one lookup.
    let before = started();
    for _ in 0..10 {
        let answer = get("/v2/hello/manifests/no-such-ref");
        assert_eq!((answer.status, answer.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));
    }
    assert_eq!(started() - before, 1, "an unknown ref was looked up more than once");

    // A failed build: built once, its reason answered ten times.
    let first = get("/v2/broken/manifests/latest");
    for _ in 0..9 {
        assert_eq!(get("/v2/broken/manifests/latest").error_message(), first.error_message());
    }
    assert_eq!(server.builds_of("broken").len(), 1);
    assert!(first.error_message().contains("builder for 'broken.drv' failed"), "{}", first.error_message());

    // After the TTL the build is tried again.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(get("/v2/broken/manifests/latest").status, 404);
    assert_eq!(server.builds_of("broken").len(), 2);
}

#[test]
fn a_restart_serves_prebuilt_images_and_a_push_rebuilds_only_what_changed() {
    let flake = TestFlake::small("first");
    flake.init_git();
    let bare = flake.bare_clone_with_hook();
    let served = format!("git+file://{}?ref=main", bare.display());
    let args = ["--prebuild", "hello", "--prebuild", "motd:latest", "--watch-interval", "0"];
    let mut server = FlakeforgeServer::start(Path::new(&served), &args);
    flake.set_hook_url(&format!("http://{}", server.host()));
    let passes = |server: &FlakeforgeServer, text: &str| server.log().matches(text).count();
    wait_until(120, "the prebuilds", || {
        passes(&server, "prebuild (prebuild): 2 of 2 images ready, 2 of them built") == 1
    });
    let builds = server.nix_builds();
    let ids = |server: &FlakeforgeServer| -> Vec<serde_json::Value> {
        server.builds()["builds"].as_array().unwrap().iter().map(|b| b["id"].clone()).collect()
    };
    let prebuilt = ids(&server);
    assert_eq!(prebuilt.len(), 2, "{}", server.builds());

    // After a restart: nothing is built (the builds listed are those from before it), the images are served.
    server.restart();
    wait_until(60, "the prebuild pass", || {
        passes(&server, "prebuild (prebuild): 2 of 2 images ready, 0 of them built") == 1
    });
    assert_eq!(server.nix_builds(), builds, "the restart built again");
    assert_eq!(ids(&server), prebuilt);
    let podman = Podman::new();
    let run = |image: &str| {
        let image = format!("{}/{image}", server.host());
        podman.run(&["run", "--rm", "--pull=always", "--tls-verify=false", &image]).trim().to_string()
    };
    assert_eq!(run("hello"), "first");
    assert_eq!(server.nix_builds(), builds);

    // A push: the hook tells the registry; only hello's derivation is built again.
    flake.commit_small("second", "");
    let pushed = flake.push(&[]);
    assert!(pushed.contains(&format!("flakeforge: asked http://{}", server.host())), "{pushed}");
    let hello = wait_for_build(&server, "hello", "watch", "succeeded", 120);
    let motd = wait_for_build(&server, "motd", "watch", "succeeded", 120);
    assert!(hello["progress"]["total"].as_u64().unwrap() >= 1, "{hello}");
    assert_eq!(motd["progress"]["total"], 0, "motd did not change, yet derivations were built: {motd}");
    assert_eq!(run("hello"), "second");
    assert_eq!(run("motd"), "message of the day");

    // A push the hook cannot report (the registry is away) does not fail; SIGUSR1 makes it look.
    flake.commit_small("third", "");
    let pushed = flake.push(&[("FLAKEFORGE_URL", "http://127.0.0.1:1")]);
    assert!(pushed.contains("flakeforge: could not reach http://127.0.0.1:1"), "{pushed}");
    // SAFETY: kill(2) on the server we started.
    assert_eq!(unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGUSR1) }, 0);
    wait_until(120, "the rebuild after SIGUSR1", || {
        server.builds_of("hello").iter().filter(|b| b["trigger"] == "watch" && b["state"] == "succeeded").count() == 2
    });
    assert_eq!(run("hello"), "third");
}

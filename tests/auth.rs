//! Access control against the real binary over HTTPS (its local CA): who
//! may pull, who may make Nix build, digests across images, build logs and
//! the refresh trigger as the policy says; real clients logging in (docker,
//! podman, skopeo, ctr, containerd's hosts.toml); failed logins throttled
//! per address; a rotated htpasswd file read again without a restart; and
//! nothing secret in the log.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::auth::{basic, Htpasswd, Https};
use common::clients::{skopeo, Containerd, Dockerd, Podman};
use common::flake::HELLO;
use common::server::{http_request, HttpResponse};
use common::{run_capture, wait_until, FlakeforgeServer, TestDir, TestFlake};

/// The passwords of the tests' users: none may appear in the server's log.
const ALICE: (&str, &str) = ("alice", "alice-secret-1");
const BOB: (&str, &str) = ("bob", "bob-secret-2");
const CAROL: (&str, &str) = ("carol", "carol-secret-3");
const CI: (&str, &str) = ("ci", "ci-secret-4");

/// alice is an admin; bob may pull hello and motd; carol may build (and so
/// pull) motd; ci may ask for a refresh; anyone may pull motd once built.
const POLICY: &str = r#"
[anonymous]
pull = ["motd"]

[users.alice]
admin = true

[users.bob]
pull = ["hello", "motd"]

[users.carol]
build = ["motd"]

[users.ci]
refresh = true
"#;

fn write_policy(dir: &TestDir, text: &str) -> String {
    let path = dir.path().join("policy.toml");
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The digests an image manifest names: its config, then its layers.
fn blobs_of(manifest: &HttpResponse) -> Vec<String> {
    let json = manifest.json();
    let layers = json["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string());
    std::iter::once(json["config"]["digest"].as_str().unwrap().to_string()).chain(layers).collect()
}

fn assert_refused(response: &HttpResponse, status: u16, message: &str) {
    let code = if status == 401 { "UNAUTHORIZED" } else { "DENIED" };
    assert_eq!((response.status, response.error_code().as_str()), (status, code), "{}", response.error_message());
    assert!(response.error_message().contains(message), "{:?} lacks {message:?}", response.error_message());
    let challenge = response.header("www-authenticate");
    assert_eq!(challenge, (status == 401).then_some("Basic realm=\"flakeforge\""));
}

/// A client's words for a 401.
fn says_unauthorized(text: &str) -> bool {
    text.to_lowercase().contains("unauthorized")
}

fn assert_no_secrets(server: &FlakeforgeServer, passwords: &[&str]) {
    let log = server.log();
    for password in passwords {
        assert!(!log.contains(password), "a password is in the log");
    }
    assert!(!log.contains("$2y$"), "a password hash is in the log");
    assert!(!log.contains(&basic("alice", ALICE.1)[6..]), "credentials are in the log");
}

#[test]
fn pulls_builds_digests_and_build_logs_follow_the_policy() {
    let flake = TestFlake::new();
    let users = Htpasswd::new(&[ALICE, BOB, CAROL, CI]);
    let files = TestDir::new();
    let policy = write_policy(&files, POLICY);
    let server = FlakeforgeServer::start_tls(flake.path(), &["--htpasswd", users.arg(), "--policy", &policy]);
    let https = Https::new(&server);
    let (alice, bob, carol, ci) = (Some(ALICE), Some(BOB), Some(CAROL), Some(CI));

    // The base endpoint: where clients learn that they must log in.
    assert_refused(&https.get("/v2/", None), 401, "authentication required");
    let empty = https.request("GET", "/v2/", &[("Authorization", "Basic Og==")]);
    assert_refused(&empty, 401, "authentication required");
    assert_eq!(https.get("/v2/", alice).status, 200);
    assert_refused(&https.get("/v2/", Some(("alice", "wrong"))), 401, "wrong user name or password");
    assert_refused(&https.get("/v2/", Some(("mallory", "x"))), 401, "wrong user name or password");
    let bearer = https.request("GET", "/v2/", &[("Authorization", "Bearer abc")]);
    assert_refused(&bearer, 401, "only HTTP Basic");

    // Pulling is not building: bob may pull hello, but nothing runs Nix for him.
    let denied = https.get("/v2/hello/manifests/latest", bob);
    assert_refused(&denied, 403, "user bob may not build hello, and hello:latest is not built yet");
    assert_refused(&https.get("/v2/hello/manifests/latest", None), 401, "anonymous clients may not pull hello");
    assert_refused(&https.get("/v2/motd/manifests/latest", None), 401, "anonymous clients may not build motd");
    assert_refused(&https.get("/v2/hello/manifests/latest", carol), 403, "user carol may not pull hello");
    // Whether a name exists makes no difference to a refusal.
    let missing = https.get("/v2/no-such-image/manifests/latest", carol);
    assert_refused(&missing, 403, "user carol may not pull no-such-image");
    assert_eq!(server.nix_builds(), 0, "a client without the build right made Nix build");

    // Once someone who may build has, it is served to those who may pull it.
    let hello = https.get("/v2/hello/manifests/latest", alice);
    assert_eq!(hello.status, 200, "{}", String::from_utf8_lossy(&hello.body));
    let for_bob = https.get("/v2/hello/manifests/latest", bob);
    assert_eq!((for_bob.status, &for_bob.body), (200, &hello.body));
    let hello_blobs = blobs_of(&hello);
    for digest in &hello_blobs {
        assert_eq!(https.send("HEAD", &format!("/v2/hello/blobs/{digest}"), bob).status, 200);
    }
    let motd = https.get("/v2/motd/manifests/latest", carol);
    assert_eq!(motd.status, 200);
    assert_eq!(https.get("/v2/motd/manifests/latest", None).body, motd.body, "anonymous may pull motd once built");
    let motd_blobs = blobs_of(&motd);

    // Digests: only through an image the client may pull, under any name.
    let only_hello: Vec<&String> = hello_blobs.iter().filter(|d| !motd_blobs.contains(d)).collect();
    let shared: Vec<&String> = hello_blobs.iter().filter(|d| motd_blobs.contains(d)).collect();
    assert!(!only_hello.is_empty() && !shared.is_empty(), "hello and motd share busybox");
    for digest in &only_hello {
        let path = format!("/v2/motd/blobs/{digest}");
        assert_refused(&https.get(&path, carol), 403, &format!("user carol may pull no image that holds {digest}"));
        assert_refused(&https.get(&path, None), 401, "anonymous clients may pull no image that holds");
        assert_eq!(https.get(&path, bob).status, 200);
    }
    for digest in &shared {
        assert_eq!(https.get(&format!("/v2/motd/blobs/{digest}"), None).status, 200);
    }
    let hello_digest = hello.header("docker-content-digest").unwrap().to_string();
    let by_digest = format!("/v2/motd/manifests/{hello_digest}");
    assert_refused(&https.get(&by_digest, carol), 403, "may pull no image that holds");
    assert_eq!(https.get(&format!("/v2/hello/manifests/{hello_digest}"), bob).body, hello.body);
    // What an image is made of (its SBOM and provenance, OCI referrers): for
    // those who may pull it, and by digest like its layers.
    let referrers = https.get(&format!("/v2/hello/referrers/{hello_digest}"), bob);
    assert_eq!(referrers.status, 200);
    let artifacts = referrers.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(artifacts.len(), 2, "an SBOM and a provenance: {artifacts:?}");
    for artifact in &artifacts {
        let manifest = https.get(&format!("/v2/hello/manifests/{}", artifact["digest"].as_str().unwrap()), bob);
        assert_eq!(manifest.status, 200);
        for document in manifest.json()["layers"].as_array().unwrap() {
            let digest = document["digest"].as_str().unwrap();
            assert_eq!(https.get(&format!("/v2/hello/blobs/{digest}"), bob).status, 200);
            let path = format!("/v2/motd/blobs/{digest}");
            assert_refused(&https.get(&path, carol), 403, "may pull no image that holds");
        }
    }
    let referrers_of_hello = format!("/v2/motd/referrers/{hello_digest}");
    assert_refused(&https.get(&referrers_of_hello, carol), 403, "may pull no image that holds");
    let referrers_tag = format!("/v2/motd/manifests/{}", hello_digest.replace(':', "-"));
    assert_refused(&https.get(&referrers_tag, carol), 403, "may pull no image that holds");
    assert_eq!(https.get(&referrers_tag.replace("motd", "hello"), bob).status, 200);
    // A digest nobody holds is refused alike, but for those who may pull everything.
    let unknown = format!("/v2/motd/blobs/sha256:{}", "0".repeat(64));
    assert_refused(&https.get(&unknown, carol), 403, "may pull no image that holds");
    assert_eq!(https.get(&unknown, alice).error_code(), "BLOB_UNKNOWN");

    // Listing: names the client may pull.
    let catalog = |login| https.get("/v2/_catalog", login).json()["repositories"].clone();
    assert_eq!(catalog(bob), serde_json::json!(["hello", "motd"]));
    assert_eq!(catalog(None), serde_json::json!(["motd"]));
    assert!(catalog(alice).as_array().unwrap().len() > 5);
    assert_eq!(https.get("/v2/hello/tags/list", bob).status, 200);
    assert_refused(&https.get("/v2/hello/tags/list", carol), 403, "user carol may not pull hello");

    // Builds and their logs are for who may build the image.
    let refused = https.get("/-/builds", None);
    assert_eq!((refused.status, refused.header("www-authenticate")), (401, Some("Basic realm=\"flakeforge\"")));
    let refused = https.get("/-/builds", bob);
    assert_eq!(refused.status, 403);
    assert!(refused.json()["error"].as_str().unwrap().contains("user bob may build no image"), "{}", refused.json());
    let images = |login| {
        let builds = https.get("/-/builds", login).json()["builds"].as_array().unwrap().clone();
        builds
            .iter()
            .map(|b| (b["image"].as_str().unwrap().to_string(), b["id"].as_str().unwrap().to_string()))
            .collect::<Vec<_>>()
    };
    let all = images(alice);
    let id_of = |image: &str| all.iter().find(|(i, _)| i == image).unwrap().1.clone();
    let (hello_build, motd_build) = (id_of("hello"), id_of("motd"));
    assert_eq!(images(carol), [("motd".to_string(), motd_build.clone())]);
    assert_eq!(https.get(&format!("/-/builds/{hello_build}"), carol).status, 404);
    assert_eq!(https.get(&format!("/-/builds/{hello_build}/log"), carol).status, 404);
    let log = https.get(&format!("/-/builds/{motd_build}/log"), carol);
    assert_eq!(log.status, 200);
    assert!(String::from_utf8_lossy(&log.body).contains("nix build"));
    assert_eq!(https.get(&format!("/-/builds/{hello_build}"), alice).status, 200);

    // The watch's trigger: admins and refresh.
    assert_eq!(https.send("POST", "/-/refresh", None).status, 401);
    assert_eq!(https.send("POST", "/-/refresh", bob).status, 403);
    assert_eq!(https.send("POST", "/-/refresh", ci).status, 202);
    assert_eq!(https.send("POST", "/-/refresh", alice).status, 202);
    // The git hook, with a netrc file for its user.
    let ca = files.path().join("ca.crt");
    fs::write(&ca, server.ca_pem()).unwrap();
    let hook = |login: Option<(&str, &str)>| {
        let hook_path = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/git-hooks/post-receive");
        let mut command = std::process::Command::new("sh");
        command.arg(hook_path).current_dir(files.path());
        command.env("FLAKEFORGE_URL", format!("https://{}", server.host())).env("FLAKEFORGE_CACERT", &ca);
        if let Some((user, password)) = login {
            let netrc = files.path().join(format!("{user}.netrc"));
            fs::write(&netrc, format!("machine 127.0.0.1 login {user} password {password}\n")).unwrap();
            command.env("FLAKEFORGE_NETRC", netrc);
        }
        let (ok, text) = run_capture(&mut command, 60);
        assert!(ok, "the hook never fails a push: {text}");
        text
    };
    assert!(hook(ci).contains("flakeforge: asked https://"), "{}", hook(ci));
    assert!(hook(bob).contains("refused the refresh (403)"), "{}", hook(bob));
    assert!(hook(None).contains("refused the refresh (401)"), "{}", hook(None));

    // The web pages and /metrics: each sees what it may; browsers get the challenge.
    let page = |path: &str, login| {
        let response = https.get(path, login);
        let text = String::from_utf8_lossy(&response.body).into_owned();
        assert_eq!(response.header("content-type"), Some("text/html; charset=utf-8"), "{path}: {text}");
        (response, text)
    };
    for path in ["/builds", "/cache", "/metrics", "/images/hello", &format!("/builds/{motd_build}")] {
        let (refused, text) = page(path, None);
        assert_eq!(refused.status, 401, "{path}: {text}");
        assert_eq!(refused.header("www-authenticate"), Some("Basic realm=\"flakeforge\""), "{path}");
    }
    let (refused, text) = page("/", Some(("bob", "wrong")));
    assert_eq!((refused.status, refused.header("www-authenticate").is_some()), (401, true), "{text}");
    let catalog_page = |login| {
        let (response, text) = page("/", login);
        assert_eq!(response.status, 200, "{text}");
        let names: Vec<String> =
            text.split("data-image=\"").skip(1).map(|rest| rest.split('"').next().unwrap().to_string()).collect();
        (names, text)
    };
    assert_eq!(catalog_page(None).0, ["motd"], "anonymous clients see the images they may pull");
    let (names, text) = catalog_page(bob);
    assert_eq!(names, ["hello", "motd"]);
    assert!(!text.contains("href=\"/builds/"), "bob may not see builds: {text}");
    let (names, text) = catalog_page(carol);
    assert_eq!(names, ["motd"]);
    assert!(text.contains("href=\"/builds/"), "carol sees the last build of motd: {text}");
    let (names, _) = catalog_page(alice);
    assert!(names.len() > 5 && names.contains(&"hello".to_string()), "{names:?}");
    for (path, what) in [("/cache", "the cache"), ("/metrics", "the metrics"), ("/builds", "no build")] {
        let (refused, text) = page(path, bob);
        assert_eq!(refused.status, 403, "{path}: {text}");
        assert!(text.contains("user bob may") && text.contains(what), "{path}: {text}");
    }
    let (refused, text) = page("/images/hello", carol);
    assert!(refused.status == 403 && text.contains("user carol may not pull hello"), "{text}");
    // Layers shared with images the client may not pull do not name them.
    let (motd_page, text) = page("/images/motd", carol);
    assert_eq!(motd_page.status, 200, "{text}");
    assert!(!text.contains(">hello:latest<"), "carol sees that hello shares a layer: {text}");
    assert!(page("/images/motd", alice).1.contains(">hello:latest<"), "alice sees the layer shared with hello");
    let (builds_page, text) = page("/builds", carol);
    assert_eq!(builds_page.status, 200);
    assert!(text.contains(&motd_build) && !text.contains(&hello_build), "{text}");
    assert_eq!(page(&format!("/builds/{hello_build}"), carol).0.status, 404);
    assert_eq!(page(&format!("/builds/{motd_build}"), carol).0.status, 200);
    let text = page("/builds", alice).1;
    assert!(text.contains(&motd_build) && text.contains(&hello_build), "{text}");
    assert_eq!(page("/cache", alice).0.status, 200);
    // Refusals are counted by endpoint like any answer.
    let metrics = || String::from_utf8(https.get("/metrics", alice).body).unwrap();
    for series in [
        "flakeforge_http_requests_total{endpoint=\"web\",status=\"401\"}",
        "flakeforge_http_requests_total{endpoint=\"web\",status=\"403\"}",
        "flakeforge_http_requests_total{endpoint=\"metrics\",status=\"401\"}",
        "flakeforge_http_requests_total{endpoint=\"metrics\",status=\"403\"}",
        "flakeforge_http_requests_total{endpoint=\"manifest\",status=\"403\"}",
        "flakeforge_http_requests_total{endpoint=\"blob\",status=\"401\"}",
        "flakeforge_http_requests_total{endpoint=\"builds\",status=\"403\"}",
    ] {
        wait_until(30, series, || metrics().lines().any(|line| line.starts_with(&format!("{series} "))));
    }

    assert_no_secrets(&server, &[ALICE.1, BOB.1, CAROL.1, CI.1]);
}

#[test]
fn failed_logins_from_one_address_are_throttled_and_another_address_is_not() {
    let flake = TestFlake::new();
    let users = Htpasswd::new(&[ALICE]);
    let server = FlakeforgeServer::start_tls(flake.path(), &["--htpasswd", users.arg()]);
    let (here, there) = (Https::new(&server).from("127.0.0.1"), Https::new(&server).from("127.0.0.2"));
    let wrong = Some(("alice", "not-her-password"));

    let started = Instant::now();
    let statuses: Vec<u16> = (0..200).map(|_| here.get("/v2/", wrong).status).collect();
    let elapsed = started.elapsed();
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    let throttled = statuses.iter().filter(|&&s| s == 429).count();
    println!("200 wrong passwords in {elapsed:.1?}: {checked} checked (401), {throttled} refused unchecked (429)");
    assert_eq!(checked + throttled, 200, "{statuses:?}");
    assert!(statuses[..10].iter().all(|&s| s == 401), "the first ten failures are free: {statuses:?}");
    // Each check past the free ones doubles the wait: in the time the 200
    // took, at most log2 of it in seconds more were checked.
    let bound = 10 + 2 + (elapsed.as_secs_f64() + 1.0).log2().ceil() as usize;
    assert!(checked <= bound, "{checked} passwords checked in {elapsed:?} (at most {bound})");

    // Another address is not concerned, nor are requests without credentials.
    assert_eq!(there.get("/v2/", Some(ALICE)).status, 200);
    assert_eq!(there.get("/v2/", wrong).status, 401);
    assert_eq!(here.get("/v2/", None).status, 401);

    // The right password waits for the backoff like any other, then works.
    let refused = here.get("/v2/", Some(ALICE));
    assert_eq!((refused.status, refused.error_code().as_str()), (429, "TOOMANYREQUESTS"));
    assert!(refused.error_message().contains("too many failed logins from this address"));
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After: {wait}");
    std::thread::sleep(Duration::from_secs(wait));
    assert_eq!(here.get("/v2/", Some(ALICE)).status, 200);

    assert_no_secrets(&server, &[ALICE.1, "not-her-password"]);
}

#[test]
fn a_rotated_htpasswd_file_is_read_again_without_a_restart() {
    let flake = TestFlake::new();
    let users = Htpasswd::new(&[("alice", "old-password")]);
    let server = FlakeforgeServer::start_tls(flake.path(), &["--htpasswd", users.arg()]);
    let https = Https::new(&server);
    let status = |user: &str, password: &str| https.get("/v2/", Some((user, password))).status;
    assert_eq!(status("alice", "old-password"), 200);

    // Each wrong password counts towards the throttle: look after the
    // second in which the server notices, not sooner.
    users.replace(&[("alice", "new-password"), ("dave", "dave-password")]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status("alice", "new-password"), 200);
    assert_eq!(status("alice", "old-password"), 401);
    assert_eq!(status("dave", "dave-password"), 200);

    // A file that cannot be used keeps the users there were, and says why.
    users.replace_with(&[("alice", "md5-password")], "-m");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status("alice", "new-password"), 200);
    wait_until(10, "the refusal of the MD5 file", || server.log().contains("keeping the previous one"));
    assert!(server.log().contains("line 1 (user alice): an MD5 hash ($apr1$)"), "{}", server.log());
    assert_eq!(status("alice", "md5-password"), 401);

    // SIGHUP reads it at once.
    users.replace(&[("erin", "erin-password")]);
    // SAFETY: kill(2) on the server this test started.
    assert_eq!(unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGHUP) }, 0);
    assert_eq!(status("erin", "erin-password"), 200);
    assert_eq!(status("alice", "new-password"), 401);
    assert_no_secrets(&server, &["old-password", "new-password", "dave-password", "md5-password", "erin-password"]);
}

/// Runs `flakeforge serve` expecting it to refuse to start; its stderr.
fn refused_start(flake: &TestFlake, args: &[&str]) -> String {
    let state = TestDir::new();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flakeforge"));
    command.args(["serve", "--flake", flake.path().to_str().unwrap(), "--listen", "127.0.0.1:0", "--state-dir"]);
    command.arg(state.path().join("state")).args(args);
    let (ok, output) = run_capture(&mut command, 60);
    assert!(!ok, "started with {args:?}");
    let line = output.lines().find(|l| l.starts_with("flakeforge: ")).unwrap_or_else(|| panic!("{output}"));
    line.to_string()
}

#[test]
fn bad_access_control_settings_stop_the_start_in_one_line() {
    let flake = TestFlake::new();
    let users = Htpasswd::new(&[ALICE]);
    let plain = refused_start(&flake, &["--no-tls", "--htpasswd", users.arg()]);
    assert!(plain.contains("--htpasswd with --no-tls") && plain.contains("--allow-insecure-auth"), "{plain}");

    let md5 = Htpasswd::new(&[]);
    md5.replace_with(&[("alice", "x"), ("bob", "y")], "-m");
    let refused = refused_start(&flake, &["--htpasswd", md5.arg()]);
    assert!(refused.contains("line 1 (user alice): an MD5 hash ($apr1$); only bcrypt"), "{refused}");
    assert!(refused.contains("htpasswd -B"), "{refused}");
    let hash = fs::read_to_string(md5.path()).unwrap();
    assert!(!refused.contains(hash.lines().next().unwrap().split_once(':').unwrap().1), "{refused}");

    let files = TestDir::new();
    let typo = write_policy(&files, "[users.bob]\npul = [\"hello\"]\n");
    let refused = refused_start(&flake, &["--htpasswd", users.arg(), "--policy", &typo]);
    assert!(refused.contains("--policy") && refused.contains("pul"), "{refused}");
    let json = files.path().join("policy.json");
    fs::write(&json, r#"{"anonymous": {"pull": ["Hello"]}}"#).unwrap();
    let refused = refused_start(&flake, &["--policy", json.to_str().unwrap()]);
    assert!(refused.contains("anonymous: pull: \"Hello\" is not a pattern"), "{refused}");

    // Behind a proxy that does TLS, plain HTTP may carry passwords when asked to.
    // The --metrics-listen address, bound privately, asks for none.
    let args = ["--htpasswd", users.arg(), "--allow-insecure-auth", "--metrics-listen", "127.0.0.1:0"];
    let server = FlakeforgeServer::start(flake.path(), &args);
    let credentials = basic(ALICE.0, ALICE.1);
    let alice = [("Authorization", credentials.as_str())];
    assert_eq!(server.request("GET", "/v2/", &alice).status, 200);
    assert_eq!(server.get("/v2/").status, 401);
    let page = server.get("/");
    assert_eq!((page.status, page.header("www-authenticate")), (401, Some("Basic realm=\"flakeforge\"")));
    assert_eq!(server.request("GET", "/", &alice).status, 200);
    assert_eq!(http_request(server.metrics_listener(), "GET", "/metrics", &[]).status, 200);
}

#[test]
fn a_policy_without_users_restricts_anonymous_clients() {
    let flake = TestFlake::new();
    let files = TestDir::new();
    let policy = write_policy(&files, "[anonymous]\npull = [\"**\"]\nbuild = [\"motd\"]\n");
    let server = FlakeforgeServer::start(flake.path(), &["--policy", &policy, "--no-legacy-packages"]);
    assert_eq!(server.get("/v2/").status, 200, "nobody can log in: no challenge");
    let refused = server.get("/v2/hello/manifests/latest");
    assert_eq!((refused.status, refused.error_code().as_str()), (403, "DENIED"));
    assert!(refused.error_message().contains("anonymous clients may not build hello"));
    assert_eq!(server.get("/v2/motd/manifests/latest").status, 200);
    // --no-legacy-packages: names are looked up in packages.<system> alone.
    assert_eq!(server.get("/v2/tools.jq/tags/list").error_code(), "NAME_UNKNOWN");
    assert_eq!(server.get("/v2/motd/tags/list").status, 200);
}

/// Real clients: docker, podman, skopeo, ctr and containerd's hosts.toml
/// log in with the right password and pull; the wrong one, and anonymous
/// clients where the policy says so, are refused.
#[test]
fn real_clients_log_in_and_pull_as_the_policy_says() {
    let flake = TestFlake::new();
    let users = Htpasswd::new(&[ALICE, BOB]);
    let files = TestDir::new();
    let policy = write_policy(&files, "[anonymous]\npull = [\"motd\"]\n[users.alice]\nadmin = true\n");
    let server = FlakeforgeServer::start_tls(flake.path(), &["--htpasswd", users.arg(), "--policy", &policy]);
    let host = server.host();
    let certs = server.cert_dir();
    let cert_dir = certs.path().to_str().unwrap();
    // Built first, so that every client below pulls what is built.
    let https = Https::new(&server);
    for image in ["hello", "motd"] {
        assert_eq!(https.get(&format!("/v2/{image}/manifests/latest"), Some(ALICE)).status, 200);
    }
    let (right, wrong) = (format!("{}:{}", ALICE.0, ALICE.1), format!("{}:wrong", ALICE.0));

    // skopeo --creds.
    let inspect = |image: &str, creds: Option<&str>| {
        let mut command = std::process::Command::new("skopeo");
        command.args(["inspect", "--cert-dir", cert_dir]);
        if let Some(creds) = creds {
            command.args(["--creds", creds]);
        }
        run_capture(command.arg(format!("docker://{host}/{image}")), 120)
    };
    assert!(inspect("hello", Some(&right)).0);
    let (ok, text) = inspect("hello", Some(&wrong));
    assert!(!ok && says_unauthorized(&text), "{text}");
    assert!(inspect("motd", None).0, "anonymous may pull motd");
    assert!(!inspect("hello", None).0, "anonymous may not pull hello");
    let copy = TestDir::new();
    let destination = format!("dir:{}", copy.path().join("hello").display());
    skopeo(&[
        "copy",
        "--src-cert-dir",
        cert_dir,
        "--src-creds",
        &right,
        &format!("docker://{host}/hello"),
        &destination,
    ]);

    // podman login, pull, logout.
    let podman = Podman::new();
    let auth_file = TestDir::new();
    let auth_json = auth_file.path().join("auth.json");
    let auth = auth_json.to_str().unwrap();
    let login = |password: &str| {
        podman.try_run(&["login", "--authfile", auth, "--cert-dir", cert_dir, "-u", ALICE.0, "-p", password, &host])
    };
    let (ok, text) = login("wrong");
    assert!(!ok && text.contains("invalid username/password"), "{text}");
    let (ok, text) = login(ALICE.1);
    assert!(ok, "{text}");
    let image = format!("{host}/hello");
    podman.run(&["pull", "-q", "--authfile", auth, "--cert-dir", cert_dir, &image]);
    assert_eq!(podman.run(&["run", "--rm", &image]).trim(), HELLO);
    podman.run(&["logout", "--authfile", auth, &host]);
    podman.run(&["rmi", &image]);
    let (ok, text) = podman.try_run(&["pull", "-q", "--authfile", auth, "--cert-dir", cert_dir, &image]);
    assert!(!ok && says_unauthorized(&text), "anonymous pulled hello: {text}");
    let motd = format!("{host}/motd");
    podman.run(&["pull", "-q", "--authfile", auth, "--cert-dir", cert_dir, &motd]);
    assert_eq!(podman.run(&["run", "--rm", &motd]).trim(), "message of the day");

    // docker login, pull, logout (docker does not check certificates of 127.0.0.0/8).
    let docker = Dockerd::start();
    let config = TestDir::new();
    let docker_cli = |args: &[&str]| {
        let mut command = docker.command(args);
        command.env("DOCKER_CONFIG", config.path());
        run_capture(&mut command, 300)
    };
    let (ok, text) = docker_cli(&["login", "-u", ALICE.0, "-p", "wrong", &host]);
    assert!(!ok && says_unauthorized(&text), "{text}");
    let (ok, text) = docker_cli(&["login", "-u", ALICE.0, "-p", ALICE.1, &host]);
    assert!(ok && text.contains("Login Succeeded"), "{text}");
    let (ok, text) = docker_cli(&["pull", "-q", &image]);
    assert!(ok, "{text}");
    let (ok, text) = docker_cli(&["run", "--rm", "--network", "none", &image]);
    assert!(ok && text.trim() == HELLO, "{text}");
    let (ok, text) = docker_cli(&["logout", &host]);
    assert!(ok, "{text}");
    assert!(docker_cli(&["rmi", &image]).0);
    let (ok, text) = docker_cli(&["pull", "-q", &image]);
    assert!(!ok, "docker pulled hello anonymously: {text}");

    // ctr --user, and containerd's hosts.toml with an Authorization header.
    // (ctr speaks plain HTTP to 127.0.0.1 unless a hosts.toml says https.)
    let containerd = Containerd::start();
    let tag = format!("{image}:latest");
    let hosts = TestDir::new();
    let host_dir = hosts.path().join(&host);
    fs::create_dir_all(&host_dir).unwrap();
    fs::copy(format!("{cert_dir}/ca.crt"), host_dir.join("ca.crt")).unwrap();
    // containerd 1.6 wants a `host` table, even an empty one.
    let hosts_toml = |password: Option<&str>| {
        let ca = host_dir.join("ca.crt");
        let mut text = format!("server = \"https://{host}\"\nca = \"{}\"\n", ca.display());
        if let Some(password) = password {
            text += &format!("[header]\n  authorization = \"{}\"\n", basic(ALICE.0, password));
        }
        fs::write(host_dir.join("hosts.toml"), text + "[host]\n").unwrap();
    };
    let hosts_dir = hosts.path().to_str().unwrap();
    let pull = |image: &str, user: Option<&str>| {
        let mut args = vec!["images", "pull", "--hosts-dir", hosts_dir];
        args.extend(user.map(|user| ["--user", user]).into_iter().flatten());
        args.push(image);
        containerd.try_ctr(&args)
    };
    hosts_toml(None);
    let (ok, text) = pull(&tag, Some(&wrong));
    assert!(!ok && says_unauthorized(&text), "{text}");
    let (ok, text) = pull(&tag, Some(&right));
    assert!(ok, "{text}");
    containerd.ctr(&["images", "rm", &tag]);
    let (ok, text) = pull(&tag, None);
    assert!(!ok && says_unauthorized(&text), "anonymous pulled hello: {text}");
    let (ok, text) = pull(&format!("{motd}:latest"), None);
    assert!(ok, "{text}");
    hosts_toml(Some("wrong"));
    let (ok, text) = pull(&tag, None);
    assert!(!ok && says_unauthorized(&text), "{text}");
    hosts_toml(Some(ALICE.1));
    let (ok, text) = pull(&tag, None);
    assert!(ok, "{text}");

    assert_no_secrets(&server, &[ALICE.1, BOB.1]);
}

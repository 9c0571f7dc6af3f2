//! The operator's pages in headless Chromium: flakeforge serves the web
//! test flake, the test builds two images that share a layer, a failing
//! one and one whose log grows for a while, then `tests/browser/web.mjs`
//! (playwright-core, Debian's chromium) loads the catalog, opens an image
//! page (pull lines, layer chart), watches the running build's log grow,
//! follows the failed build's log and looks at the cache. Screenshots go to
//! `target/screenshots/web/`. The same pages without a browser: every
//! value is in the HTML (no script needed) and escaped. Behind access
//! control, `tests/browser/login.mjs`: Chromium gets the login challenge,
//! and once it answers sees what its user may; the menu links to the pages
//! each viewer (anonymous too) may open, and to no other.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::auth::{basic, Htpasswd};
use common::flake::TICKS;
use common::server::{read_response, HttpResponse};
use common::{require_tool, run_capture, wait_until, FlakeforgeServer, TestDir, TestFlake};

const OCI_MANIFEST: (&str, &str) = ("Accept", "application/vnd.oci.image.manifest.v1+json");

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// node, chromium and playwright-core, or a failure saying how to get them.
fn require_browser() {
    require_tool("node");
    assert!(Path::new("/usr/bin/chromium").is_file(), "chromium is not installed: run scripts/install-deps.sh");
    assert!(
        browser_dir().join("node_modules/playwright-core/package.json").is_file(),
        "playwright-core is not installed in tests/browser: run scripts/install-deps.sh"
    );
}

/// Builds `name` (the request waits for it); the build's id.
fn build(server: &FlakeforgeServer, name: &str, status: u16) -> String {
    let response = server.request("GET", &format!("/v2/{name}/manifests/latest"), &[OCI_MANIFEST]);
    assert_eq!(response.status, status, "{name}: {}", String::from_utf8_lossy(&response.body));
    server.builds_of(name)[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn the_pages_in_a_browser() {
    require_browser();
    let flake = TestFlake::web();
    let server = FlakeforgeServer::start(flake.path(), &[]);
    build(&server, "hello", 200);
    build(&server, "world", 200);
    let broken = build(&server, "broken", 404);
    // One blob pulled, so that the cache has a hit to show.
    let manifest = server.request("GET", "/v2/hello/manifests/latest", &[OCI_MANIFEST]).json();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(server.get(&format!("/v2/hello/blobs/{layer}")).status, 200);

    // The ticker builds while the browser watches; its request waits for it.
    let addr = server.addr();
    let ticker = std::thread::spawn(move || {
        common::server::http_request(addr, "GET", "/v2/ticker/manifests/latest", &[OCI_MANIFEST]).status
    });
    wait_until(120, "the ticker build to tick", || {
        server
            .builds_of("ticker")
            .first()
            .is_some_and(|b| b["state"] == "running" && b["log_tail"].to_string().contains("tick 1"))
    });
    let ticker_id = server.builds_of("ticker")[0]["id"].as_str().unwrap().to_string();

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots/web");
    let base = format!("http://{}", server.host());
    let mut node = Command::new("node");
    node.arg(browser_dir().join("web.mjs")).args([&base, shots.to_str().unwrap(), &ticker_id, &broken]);
    node.current_dir(browser_dir());
    let (ok, output) = run_capture(&mut node, 120 + 3 * TICKS);
    println!("{output}");
    // Whatever the browser found, the build ends before the server stops.
    assert_eq!(ticker.join().unwrap(), 200, "the ticker build");
    assert!(ok, "the browser checks failed:\n{output}");
    println!("screenshots: {}", shots.display());
}

/// With `--htpasswd` (plain HTTP, as behind a proxy that does TLS): the
/// pages ask Chromium to log in where anonymous clients may not look, and
/// show each viewer what it may see. Anonymous clients may pull hello but
/// build nothing: their menu has no Builds (nor Cache); a user who may
/// build hello has Builds, the admin Cache too.
#[test]
fn the_pages_in_a_browser_that_logs_in() {
    require_browser();
    let flake = TestFlake::web();
    let (admin, puller, builder) = (("alice", "alice-secret"), ("bob", "bob-secret"), ("carol", "carol-secret"));
    let users = Htpasswd::new(&[admin, puller, builder]);
    let files = TestDir::new();
    let policy = files.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[anonymous]\npull = [\"hello\"]\n[users.alice]\nadmin = true\n[users.bob]\npull = [\"hello\"]\n\
         [users.carol]\nbuild = [\"hello\"]\n",
    )
    .unwrap();
    let args = ["--htpasswd", users.arg(), "--allow-insecure-auth", "--policy", policy.to_str().unwrap()];
    let server = FlakeforgeServer::start(flake.path(), &args);
    let as_admin = basic(admin.0, admin.1);
    for name in ["hello", "world"] {
        let path = format!("/v2/{name}/manifests/latest");
        let response = server.request("GET", &path, &[OCI_MANIFEST, ("Authorization", &as_admin)]);
        assert_eq!(response.status, 200, "{name}: {}", String::from_utf8_lossy(&response.body));
    }
    let builds = server.request("GET", "/-/builds", &[("Authorization", &as_admin)]).json();
    let hello = builds["builds"].as_array().unwrap().iter().find(|b| b["image"] == "hello").unwrap();

    let base = format!("http://{}", server.host());
    let logins = [puller, admin, builder].map(|(user, password)| format!("{user}:{password}"));
    let mut node = Command::new("node");
    node.arg(browser_dir().join("login.mjs")).arg(&base).arg(hello["id"].as_str().unwrap()).args(&logins);
    node.current_dir(browser_dir());
    let (ok, output) = run_capture(&mut node, 180);
    println!("{output}");
    assert!(ok, "the browser checks failed:\n{output}");
}

/// `GET path` with this `Host` header.
fn with_host(server: &FlakeforgeServer, path: &str, host: &str) -> HttpResponse {
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    read_response(&mut BufReader::new(stream), false)
}

/// What the pages say without a browser: everything is in the HTML, and
/// what came from elsewhere (a name in the path, the Host header) is escaped.
#[test]
fn the_pages_without_a_browser() {
    let flake = TestFlake::web();
    let server = FlakeforgeServer::start(flake.path(), &[]);
    build(&server, "hello", 200);

    let catalog = server.get("/");
    assert_eq!(catalog.status, 200);
    assert_eq!(catalog.header("content-type"), Some("text/html; charset=utf-8"));
    let policy = catalog.header("content-security-policy").unwrap();
    assert!(policy.starts_with("default-src 'none'"), "{policy}");
    let html = String::from_utf8(catalog.body).unwrap();
    for name in ["hello", "world", "broken", "ticker"] {
        assert!(html.contains(&format!("<tr data-image=\"{name}\">")), "no row for {name}:\n{html}");
    }
    // Without access control, anyone may open every section.
    let menu = "<nav><a href=\"/\" aria-current=\"page\">Images</a><a href=\"/builds\">Builds</a><a href=\"/cache\">Cache</a></nav>";
    assert!(html.contains(menu), "the menu:\n{html}");

    let image = with_host(&server, "/images/hello:latest", "registry.example:5000");
    let html = String::from_utf8(image.body).unwrap();
    assert_eq!(image.status, 200, "{html}");
    assert!(html.contains("value=\"docker pull registry.example:5000/hello:latest\""), "{html}");
    assert!(html.contains("<svg class=\"layers\""));

    let hostile = with_host(&server, "/images/hello:latest", "\"><script>alert(1)</script>");
    let html = String::from_utf8(hostile.body).unwrap();
    assert!(!html.contains("<script>alert"), "the Host header went into the page");
    assert!(html.contains(&format!("value=\"docker pull {}/hello:latest\"", server.host())));

    let unknown = server.get("/images/no-such-image");
    assert_eq!(unknown.status, 404);
    assert!(String::from_utf8(unknown.body).unwrap().contains("Not built yet"));
    assert_eq!(server.get("/images/%3Cscript%3E").status, 404);
    let no_build = server.get("/builds/%3Cb%3E");
    assert_eq!(no_build.status, 404);
    assert!(!String::from_utf8(no_build.body).unwrap().contains("<b>"));
    assert_eq!(server.request("POST", "/", &[]).status, 405);

    for path in ["/builds", "/cache", "/metrics"] {
        assert_eq!(server.get(path).status, 200, "{path}");
    }
    // The registry's own answers are unchanged beside the pages.
    assert_eq!(server.get("/nothing").error_code(), "UNSUPPORTED");
}

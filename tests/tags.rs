//! Tags are git refs of the served flake: `latest` is the flake as it is,
//! `v1` a tag, a 40-hex tag a revision; moving tags are resolved again after
//! the TTL.

mod common;

use common::clients::Podman;
use common::flake::HELLO;
use common::{FlakeforgeServer, TestFlake};

#[test]
fn tags_select_git_refs() {
    let flake = TestFlake::new();
    flake.init_git();
    let first = flake.commit_hello("second version");
    // Without --no-stale, the first pull after the TTL gets the last image while the new one builds (see lifecycle.rs).
    let server = FlakeforgeServer::start(flake.path(), &["--tag-ttl", "1", "--no-stale"]);
    let podman = Podman::new();
    let run = |reference: &str| {
        let image = format!("{}/hello:{reference}", server.host());
        podman.run(&["run", "--rm", "--pull=always", "--tls-verify=false", &image]).trim().to_string()
    };
    assert_eq!(run("v1"), HELLO);
    assert_eq!(run("latest"), "second version");
    assert_eq!(run(&first), "second version");

    // latest moves after the TTL; the revision tag stays.
    flake.commit_hello("third version");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(run("latest"), "third version");
    assert_eq!(run(&first), "second version");

    let unknown = server.get("/v2/hello/manifests/no-such-ref");
    assert_eq!((unknown.status, unknown.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));
    let tags = server.get("/v2/hello/tags/list").json();
    let tags: Vec<&str> = tags["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(tags.contains(&"latest") && tags.contains(&"v1") && tags.contains(&first.as_str()), "{tags:?}");
}

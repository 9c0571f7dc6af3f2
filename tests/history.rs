//! The build history across a restart (the process killed, as a crash or a
//! reboot would end it): the builds that finished before it are listed
//! again, with their status, times, trigger and logs, on `/-/builds` and the
//! builds pages; a damaged record is logged once and left out; builds after
//! the restart are listed with them. Real Nix, one restart.

mod common;

use std::fs;

use common::{FlakeforgeServer, TestFlake};

const ACCEPT: [(&str, &str); 1] = [("Accept", "application/vnd.oci.image.manifest.v1+json")];

/// The whole log of build `id`, as text.
fn log_of(server: &FlakeforgeServer, id: &str) -> String {
    let response = server.get(&format!("/-/builds/{id}/log"));
    assert_eq!(response.status, 200, "{id}");
    String::from_utf8(response.body).unwrap()
}

/// A build as listed, without its duration (kept to the millisecond, shown to the tenth of a second).
fn without_duration(build: &serde_json::Value) -> serde_json::Value {
    let mut build = build.clone();
    build.as_object_mut().unwrap().remove("duration_secs");
    build
}

#[test]
fn finished_builds_are_listed_again_after_a_restart() {
    let flake = TestFlake::new();
    let mut server = FlakeforgeServer::start(flake.path(), &[]);
    assert_eq!(server.request("GET", "/v2/hello/manifests/latest", &ACCEPT).status, 200);
    assert_eq!(server.request("GET", "/v2/broken/manifests/latest", &ACCEPT).status, 404);
    let before = server.builds()["builds"].as_array().unwrap().clone();
    let states: Vec<_> = before.iter().map(|b| (b["image"].as_str().unwrap(), b["state"].as_str().unwrap())).collect();
    assert_eq!(states, [("broken", "failed"), ("hello", "succeeded")], "{before:?}");
    let ids: Vec<String> = before.iter().map(|b| b["id"].as_str().unwrap().to_string()).collect();
    let logs: Vec<String> = ids.iter().map(|id| log_of(&server, id)).collect();
    assert!(logs[0].contains("broken> flakeforge-test-build-failure"), "{}", logs[0]);
    assert!(logs[1].contains("$ nix build") && logs[1].contains("done: sha256:"), "{}", logs[1]);

    // A record damaged while the server is away: a copy of one with a bit flipped.
    let records = server.state_dir().join("builds");
    let written: Vec<Vec<u8>> = ids.iter().map(|id| fs::read(records.join(format!("{id}.json"))).unwrap()).collect();
    let mut bytes = written[1].clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let damaged = records.join("0123456789.json");
    fs::write(&damaged, bytes).unwrap();
    let since = server.log().len();
    server.restart();

    // Both are listed as they were, with their logs; the damaged record is left out, said once, and removed.
    let restarted_log = server.log()[since..].to_string();
    let notices: Vec<&str> = restarted_log.lines().filter(|l| l.contains("0123456789")).collect();
    assert_eq!(notices.len(), 1, "{restarted_log}");
    assert!(notices[0].contains("build history") && notices[0].contains("checksum"), "{}", notices[0]);
    assert!(!damaged.exists(), "the damaged record is still there");
    let after = server.builds()["builds"].as_array().unwrap().clone();
    assert_eq!(
        after.iter().map(without_duration).collect::<Vec<_>>(),
        before.iter().map(without_duration).collect::<Vec<_>>()
    );
    let took = |b: &serde_json::Value| b["duration_secs"].as_f64().unwrap();
    for (after, before) in after.iter().zip(&before) {
        assert!((took(after) - took(before)).abs() <= 0.1, "{after} {before}");
    }
    for (id, log) in ids.iter().zip(&logs) {
        assert_eq!(&log_of(&server, id), log);
    }

    // The pages show them as before: in the list (the failure with the end of its log), each on its own page whole.
    let page = String::from_utf8(server.get("/builds").body).unwrap();
    for id in &ids {
        assert!(page.contains(&format!("href=\"/builds/{id}\"")), "{page}");
    }
    assert!(page.contains("Failed lately (1)") && page.contains("Succeeded lately (1)"), "{page}");
    assert!(page.contains("flakeforge-test-build-failure"), "{page}");
    let page = server.get(&format!("/builds/{}", ids[0]));
    let text = String::from_utf8(page.body).unwrap();
    assert_eq!(page.status, 200);
    assert!(text.contains("broken&gt; flakeforge-test-build-failure") && text.contains("id=\"error\""), "{text}");

    // A build after the restart is listed first, kept beside the one from before.
    assert_eq!(server.request("GET", "/v2/motd/manifests/latest", &ACCEPT).status, 200);
    let now = server.builds()["builds"].as_array().unwrap().clone();
    let listed: Vec<_> = now.iter().map(|b| (b["image"].as_str().unwrap(), b["state"].as_str().unwrap())).collect();
    assert_eq!(listed, [("motd", "succeeded"), ("broken", "failed"), ("hello", "succeeded")], "{now:?}");
    let new_id = now[0]["id"].as_str().unwrap();
    assert!(log_of(&server, new_id).contains("done: sha256:"));
    let mut on_disk: Vec<String> =
        fs::read_dir(&records).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    on_disk.sort();
    let mut expected: Vec<String> =
        ids.iter().map(String::as_str).chain([new_id]).map(|id| format!("{id}.json")).collect();
    expected.sort();
    assert_eq!(on_disk, expected);
    for (id, written) in ids.iter().zip(&written) {
        assert_eq!(&fs::read(records.join(format!("{id}.json"))).unwrap(), written, "reading {id} back changed it");
    }
}

//! Confs that do not parse are build errors with a clear message, never a
//! panic and never an image of another kind: a `created` with a character
//! where a digit should be, a five-digit year, an `mtime` that would
//! overflow, a conf cut short, a `from_image` that is no docker archive. A
//! single-file output that is no conf at all is still a plain package.

mod common;

use common::flake::for_this_machine;
use common::{FlakeforgeServer, TestFlake};

const FLAKE: &str = r#"{
  outputs = { self }:
    let
      system = "@SYSTEM@";
      tools = builtins.path { path = ./tools; name = "test-tools"; };
      bb = "${tools}/busybox";
      run = name: script: extra: derivation ({ inherit name system; builder = bb; args = [ "sh" "-c" script ]; } // extra);
      file = name: text: run name ''${bb} printf '%s' "$text" > $out'' { inherit text; };
      customisation = run "customisation-layer" ''${bb} mkdir -p $out root && ${bb} tar -C root -cf $out/layer.tar .'' { };
      conf = name: extra: file "${name}-conf.json" (builtins.toJSON ({
        architecture = "@ARCH@"; config = { Cmd = [ "/bin/sh" ]; };
        created = "1970-01-01T00:00:01Z"; mtime = "1970-01-01T00:00:01Z";
        uid = 0; gid = 0; uname = "root"; gname = "root"; store_dir = "/nix/store";
        store_layers = [ ]; customisation_layer = "${customisation}"; from_image = null; repo_tag = "${name}:latest";
      } // extra));
    in {
      packages.${system} = {
        goodconf = conf "goodconf" { };
        accented = conf "accented" { created = "2023-11-1é"; };
        fiveyears = conf "fiveyears" { created = "99999-01-01"; };
        hugemtime = conf "hugemtime" { mtime = "999999-1-1"; };
        truncated = file "truncated-conf.json" ''{"architecture": "amd64", "store_layers": [["/nix/store/x'';
        badbase = conf "badbase" { from_image = "${file "base.tar" "this is no docker archive"}"; };
        notaconf = file "notaconf.json" ''{"name": "just some JSON"}'';
      };
    };
}
"#;

#[test]
fn a_broken_conf_is_a_build_error_never_another_image() {
    let flake = TestFlake::with_text(&for_this_machine(FLAKE));
    let server = FlakeforgeServer::start(flake.path(), &[]);
    for name in ["goodconf", "notaconf"] {
        let response = server.get(&format!("/v2/{name}/manifests/latest"));
        assert_eq!(response.status, 200, "{name}: {}", String::from_utf8_lossy(&response.body));
    }
    let layers = |name: &str| server.get(&format!("/v2/{name}/manifests/latest")).json()["layers"].clone();
    assert_eq!(layers("goodconf").as_array().unwrap().len(), 1, "only the customisation layer");

    for (name, reason) in [
        ("accented", "created"),
        ("fiveyears", "created"),
        ("hugemtime", "mtime"),
        ("truncated", "does not parse"),
        ("badbase", "archive"),
    ] {
        let response = server.get(&format!("/v2/{name}/manifests/latest"));
        assert_eq!((response.status, response.error_code().as_str()), (404, "MANIFEST_UNKNOWN"), "{name}");
        let message = response.json()["errors"][0]["message"].as_str().unwrap().to_string();
        assert!(message.contains(reason), "{name}: {message}");
        assert!(message.contains("conf") || message.contains("archive"), "{name}: {message}");
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

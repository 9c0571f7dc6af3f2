//! What every image says it is made of, against real Nix and real clients:
//! its SBOM is valid CycloneDX 1.5 (the official schema, through
//! cyclonedx-python-lib), lists exactly the closure `nix path-info
//! --recursive` reports with its references as dependencies, names and
//! versions from the derivations and the package's meta; its provenance
//! names the locked revision (a tag's own) and the flake's inputs; both are
//! listed by the referrers API (filtered and not, for both manifest forms)
//! and the referrers tag, linked from the image's page, and skopeo copies
//! them; they come out the same after a restart and from another state
//! directory; `--no-sbom` attaches nothing and changes no image. Manifests
//! carry the annotations, a plain package's config the same labels, a
//! conf's config stays the conf's.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::clients::skopeo;
use common::flake::{for_this_machine, BASE_IMAGE};
use common::server::HttpResponse;
use common::{run_ok, FlakeforgeServer, TestDir, TestFlake, NIX_CONFIG};
use serde_json::Value;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CYCLONEDX: &str = "application/vnd.cyclonedx+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";

/// Where scripts/install-deps.sh puts cyclonedx-python-lib with its JSON validator.
const VALIDATOR_PYTHON: &str = "/opt/flakeforge-test/cyclonedx/bin/python";

/// Packages with `pname` and `version`, a `meta` with a license and a
/// homepage, references between them, an input (a path flake of the
/// test's own) and a conf image on a docker-archive base.
const FLAKE: &str = r#####"{
  description = "flakeforge SBOM test flake";
  inputs.helper.url = "path:@HELPER@";
  outputs = { self, helper }:
    let
      system = "@SYSTEM@";
      arch = "@ARCH@";
      tools = builtins.path { path = ./tools; name = "sbom-test-tools"; };
      bb = "${tools}/busybox";
      run = name: script: extra: derivation ({ inherit name system; builder = bb; args = [ "sh" "-c" script ]; } // extra);
      busybox = run "busybox-1.36.1" ''
        ${bb} mkdir -p $out/bin
        ${bb} cp ${bb} $out/bin/busybox
        ${bb} ln -s busybox $out/bin/sh
      '' { pname = "busybox"; version = "1.36.1"; };
      greeting = run "greeting-@VERSION@" ''
        ${bb} mkdir -p $out/share
        ${bb} echo "${helper.greeting} @VERSION@" > $out/share/greeting
      '' { pname = "greeting"; version = "@VERSION@"; };
      hello = run "hello-@VERSION@" ''
        ${bb} mkdir -p $out/bin
        ${bb} printf '#!${busybox}/bin/sh\n${busybox}/bin/busybox cat ${greeting}/share/greeting\n' > $out/bin/hello
        ${bb} chmod +x $out/bin/hello
      '' { pname = "hello"; version = "@VERSION@"; } // {
        meta = {
          mainProgram = "hello";
          license = { spdxId = "MIT"; fullName = "MIT License"; };
          homepage = "https://example.org/hello";
          description = "Says its version";
        };
      };
@BASE_IMAGE@
      customisation = run "customisation-layer" ''
        set -e
        PATH=${busybox}/bin
        mkdir -p root $out
        ln -s ${hello}/bin/hello root/hello
        tar -C root -cf $out/layer.tar hello
      '' { };
      conf = run "based-conf.json" ''${bb} printf '%s' "$conf" > $out'' {
        conf = builtins.toJSON {
          architecture = arch;
          config = { Cmd = [ "/hello" ]; };
          created = "1970-01-01T00:00:01Z";
          mtime = "1970-01-01T00:00:01Z";
          uid = 0; gid = 0; uname = "root"; gname = "root";
          store_dir = "/nix/store";
          store_layers = [ [ "${busybox}" ] [ "${greeting}" "${hello}" ] ];
          customisation_layer = "${customisation}";
          from_image = "${base}";
          repo_tag = "based:latest";
        };
      };
    in {
      packages.${system} = {
        inherit busybox hello;
        based = run "based" "${bb} echo not a script > $out" { } // { inherit conf; };
      };
    };
}
"#####;

/// The test flake (with `hello` at `version`), its input and its lock file.
struct SbomFlake {
    flake: TestFlake,
    helper: TestDir,
}

impl SbomFlake {
    fn new(version: &str) -> SbomFlake {
        let helper = TestDir::new();
        fs::write(helper.path().join("flake.nix"), "{ outputs = { self }: { greeting = \"hello from\"; }; }\n")
            .unwrap();
        let flake = SbomFlake { flake: TestFlake::with_text(""), helper };
        flake.write(version);
        let path = flake.flake.path().to_str().unwrap();
        run_ok(Command::new("nix").args(["flake", "lock", path]).env("NIX_CONFIG", NIX_CONFIG), 120);
        flake
    }

    fn write(&self, version: &str) {
        let text = for_this_machine(&FLAKE.replace("@BASE_IMAGE@", BASE_IMAGE))
            .replace("@VERSION@", version)
            .replace("@HELPER@", self.helper.path().to_str().unwrap());
        fs::write(self.flake.path().join("flake.nix"), text).unwrap();
    }

    fn path(&self) -> &Path {
        self.flake.path()
    }
}

/// The manifest `reference` of `name` in the form `accept` asks for: its digest and JSON.
fn manifest(server: &FlakeforgeServer, name: &str, reference: &str, accept: &str) -> (String, Value) {
    let response = server.request("GET", &format!("/v2/{name}/manifests/{reference}"), &[("Accept", accept)]);
    assert_eq!(response.status, 200, "{name}:{reference}: {}", String::from_utf8_lossy(&response.body));
    (response.header("docker-content-digest").unwrap().to_string(), response.json())
}

fn referrers(server: &FlakeforgeServer, digest: &str, query: &str) -> HttpResponse {
    let response = server.get(&format!("/v2/hello/referrers/{digest}{query}"));
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.header("content-type"), Some(OCI_INDEX));
    response
}

fn blob(server: &FlakeforgeServer, digest: &str) -> Vec<u8> {
    let response = server.get(&format!("/v2/hello/blobs/{digest}"));
    assert_eq!(response.status, 200, "blob {digest}");
    response.body
}

/// An artifact of `artifact_type` among the referrers of manifest `subject`:
/// its manifest's digest, its manifest and its document.
fn artifact(server: &FlakeforgeServer, subject: &str, artifact_type: &str) -> (String, Value, Vec<u8>) {
    let index = referrers(server, subject, "").json();
    let entry = index["manifests"].as_array().unwrap().iter().find(|m| m["artifactType"] == artifact_type);
    let digest = entry.unwrap_or_else(|| panic!("no {artifact_type} refers to {subject}: {index}"))["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, manifest) = manifest(server, "hello", &digest, OCI_MANIFEST);
    assert_eq!(manifest["artifactType"], artifact_type);
    assert_eq!(manifest["subject"]["digest"], subject);
    let document = blob(server, manifest["layers"][0]["digest"].as_str().unwrap());
    (digest, manifest, document)
}

/// Fails unless `sbom` is valid CycloneDX 1.5 by the official JSON schema (strict: no unknown fields).
fn assert_valid_cyclonedx(sbom: &[u8]) {
    assert!(Path::new(VALIDATOR_PYTHON).is_file(), "{VALIDATOR_PYTHON} is missing: run scripts/install-deps.sh");
    let dir = TestDir::new();
    let file = dir.path().join("sbom.cdx.json");
    fs::write(&file, sbom).unwrap();
    let script = "import sys\n\
        from cyclonedx.schema import SchemaVersion\n\
        from cyclonedx.validation.json import JsonStrictValidator\n\
        error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\n\
        if error is not None:\n    sys.exit(f'not valid CycloneDX 1.5: {error}')\n";
    run_ok(Command::new(VALIDATOR_PYTHON).args(["-c", script]).arg(&file), 120);
}

/// `nix path-info --recursive --json` of `path`: each path's NAR hash and references.
fn closure(path: &Path) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let out = run_ok(
        Command::new("nix").args(["path-info", "--recursive", "--json"]).arg(path).env("NIX_CONFIG", NIX_CONFIG),
        120,
    );
    let infos: Vec<Value> = serde_json::from_str(&out).unwrap();
    infos
        .iter()
        .map(|info| {
            let references = info["references"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string());
            (
                info["path"].as_str().unwrap().to_string(),
                (info["narHash"].as_str().unwrap().to_string(), references.collect()),
            )
        })
        .collect()
}

/// The hex of an SRI `sha256-<base64>` hash.
fn sri_hex(sri: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD.decode(sri.strip_prefix("sha256-").unwrap()).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `<a>` tag of the image page that links the document of `artifact_type`.
fn attached_link<'a>(page: &'a str, artifact_type: &str) -> &'a str {
    let marker = format!("data-artifact-type=\"{artifact_type}\"");
    let at = page.find(&marker).unwrap_or_else(|| panic!("no link to the {artifact_type} document: {page}"));
    let start = page[..at].rfind("<a ").unwrap();
    &page[start..start + page[start..].find('>').unwrap()]
}

fn attribute(tag: &str, name: &str) -> String {
    let start = tag.find(&format!(" {name}=\"")).unwrap_or_else(|| panic!("no {name} in {tag}")) + name.len() + 3;
    tag[start..start + tag[start..].find('"').unwrap()].to_string()
}

fn property<'a>(component: &'a Value, name: &str) -> Vec<&'a str> {
    let properties = component["properties"].as_array().map(Vec::as_slice).unwrap_or_default();
    properties.iter().filter(|p| p["name"] == name).map(|p| p["value"].as_str().unwrap()).collect()
}

#[test]
fn the_sbom_is_the_closure_and_the_provenance_the_revision() {
    let flake = SbomFlake::new("1.0");
    flake.flake.init_git();
    let v1 = run_ok(Command::new("git").args(["rev-parse", "v1"]).current_dir(flake.path()), 30).trim().to_string();
    flake.write("2.0");
    let head = flake.flake.commit("version 2.0");
    let mut server = FlakeforgeServer::start(flake.path(), &[]);

    // The manifest says where the image comes from; the config the same, as labels.
    let (digest, oci) = manifest(&server, "hello", "latest", OCI_MANIFEST);
    let annotations = &oci["annotations"];
    assert_eq!(annotations["org.opencontainers.image.revision"], head.as_str());
    assert_eq!(annotations["org.opencontainers.image.source"], flake.path().to_str().unwrap());
    assert_eq!(annotations["org.opencontainers.image.title"], "hello");
    assert_eq!(annotations["org.opencontainers.image.version"], "2.0");
    assert!(annotations["org.opencontainers.image.created"].as_str().unwrap().ends_with('Z'));
    let config: Value = serde_json::from_slice(&blob(&server, oci["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(&config["config"]["Labels"], annotations);
    let (docker_digest, docker) = manifest(&server, "hello", "latest", DOCKER_MANIFEST);
    assert!(docker.get("annotations").is_none(), "Docker schema 2 has no annotations");

    // The referrers: the SBOM and the provenance, filtered and not.
    let all = referrers(&server, &digest, "");
    assert!(all.header("oci-filters-applied").is_none());
    let listed = all.json();
    let types: Vec<&str> =
        listed["manifests"].as_array().unwrap().iter().map(|m| m["artifactType"].as_str().unwrap()).collect();
    assert_eq!(types, [CYCLONEDX, IN_TOTO]);
    let sboms = referrers(&server, &digest, "?artifactType=application%2Fvnd.cyclonedx%2Bjson");
    assert_eq!(sboms.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(sboms.json()["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(sboms.json()["manifests"][0], all.json()["manifests"][0]);
    let none = referrers(&server, &digest, "?artifactType=application/vnd.example.none");
    assert_eq!(none.json()["manifests"], serde_json::json!([]));
    let unknown = referrers(&server, &format!("sha256:{}", "0".repeat(64)), "");
    assert_eq!(unknown.json()["manifests"], serde_json::json!([]));

    // The SBOM: valid CycloneDX, exactly the closure, the references as dependencies.
    let (sbom_manifest_digest, sbom_manifest, sbom) = artifact(&server, &digest, CYCLONEDX);
    assert_eq!(sbom_manifest["subject"]["mediaType"], OCI_MANIFEST);
    assert_valid_cyclonedx(&sbom);
    let bom: Value = serde_json::from_slice(&sbom).unwrap();
    let hello_out = flake.flake.build("hello");
    let expected = closure(&hello_out);
    let components = bom["components"].as_array().unwrap();
    let listed: BTreeSet<&str> = components.iter().map(|c| c["bom-ref"].as_str().unwrap()).collect();
    assert_eq!(listed, expected.keys().map(String::as_str).collect::<BTreeSet<_>>());
    assert_eq!(expected.len(), 3, "hello, greeting and busybox: {expected:?}");
    let dependencies: BTreeMap<&str, BTreeSet<&str>> = bom["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let on = d["dependsOn"].as_array().unwrap().iter().map(|r| r.as_str().unwrap());
            (d["ref"].as_str().unwrap(), on.collect())
        })
        .collect();
    for (path, (nar_hash, references)) in &expected {
        let others: BTreeSet<&str> = references.iter().map(String::as_str).filter(|r| r != path).collect();
        assert_eq!(dependencies[path.as_str()], others, "the dependencies of {path}");
        let component = components.iter().find(|c| c["bom-ref"] == path.as_str()).unwrap();
        assert_eq!(component["hashes"][0]["content"], sri_hex(nar_hash), "the NAR hash of {path}");
    }
    assert_eq!(dependencies["image"], BTreeSet::from([hello_out.to_str().unwrap()]));
    let by_name: BTreeMap<&str, &Value> = components.iter().map(|c| (c["name"].as_str().unwrap(), c)).collect();
    assert_eq!(by_name.keys().copied().collect::<Vec<_>>(), ["busybox", "greeting", "hello"]);
    assert_eq!(
        (by_name["hello"]["version"].as_str(), by_name["busybox"]["version"].as_str()),
        (Some("2.0"), Some("1.36.1"))
    );
    assert_eq!(by_name["hello"]["purl"], "pkg:nix/hello@2.0");
    assert_eq!(by_name["hello"]["licenses"][0]["license"]["id"], "MIT");
    assert_eq!(by_name["hello"]["externalReferences"][0]["url"], "https://example.org/hello");
    assert_eq!(by_name["hello"]["description"], "Says its version");
    assert!(by_name["greeting"].get("licenses").is_none());
    let image = &bom["metadata"]["component"];
    assert_eq!(
        (image["type"].as_str(), image["name"].as_str(), image["version"].as_str()),
        (Some("container"), Some("hello"), Some("2.0"))
    );
    assert_eq!(property(image, "flakeforge:flake:revision"), [head.as_str()]);
    assert_eq!(property(image, "flakeforge:image:config"), [oci["config"]["digest"].as_str().unwrap()]);

    // The provenance: the revision, the flake's input, both manifests as subjects.
    let (_, _, statement) = artifact(&server, &digest, IN_TOTO);
    let statement: Value = serde_json::from_slice(&statement).unwrap();
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    let subjects: BTreeSet<String> = statement["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("sha256:{}", s["digest"]["sha256"].as_str().unwrap()))
        .collect();
    assert_eq!(subjects, BTreeSet::from([digest.clone(), docker_digest.clone()]));
    let definition = &statement["predicate"]["buildDefinition"];
    assert_eq!(definition["externalParameters"]["revision"], head.as_str());
    assert_eq!(definition["resolvedDependencies"][0]["digest"]["gitCommit"], head.as_str());
    let helper = &definition["resolvedDependencies"][1];
    assert_eq!(helper["name"], "inputs/helper");
    assert_eq!(helper["uri"], format!("path:{}", flake.helper.path().display()));
    assert!(helper["digest"]["narHash"].as_str().unwrap().starts_with("sha256-"));

    // The Docker form has referrers of its own, with it as the subject.
    let (_, docker_sbom, docker_bom) = artifact(&server, &docker_digest, CYCLONEDX);
    assert_eq!(docker_sbom["subject"]["mediaType"], DOCKER_MANIFEST);
    assert_eq!(docker_bom, sbom, "one image, one SBOM");

    // The referrers tag is the same index, fetchable by its digest too.
    let tag = server.get(&format!("/v2/hello/manifests/sha256-{}", &digest["sha256:".len()..]));
    assert_eq!((tag.status, tag.header("content-type")), (200, Some(OCI_INDEX)));
    assert_eq!(tag.body, all.body);
    let index_digest = tag.header("docker-content-digest").unwrap();
    assert_eq!(server.get(&format!("/v2/hello/manifests/{index_digest}")).body, all.body);
    let no_tag = server.get(&format!("/v2/hello/manifests/sha256-{}", "0".repeat(64)));
    assert_eq!((no_tag.status, no_tag.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));

    // skopeo copies the SBOM artifact, document and all.
    let copied = TestDir::new();
    let destination = format!("dir:{}", copied.path().join("sbom").display());
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/hello@{sbom_manifest_digest}", server.host()),
        &destination,
    ]);
    let blob_hex = sbom_manifest["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    assert_eq!(fs::read(copied.path().join("sbom").join(blob_hex)).unwrap(), sbom);

    // The image's page links both documents, and the referrers list.
    let page = server.get("/images/hello");
    assert_eq!(page.status, 200);
    let page = String::from_utf8(page.body).unwrap();
    let (_, _, statement_bytes) = artifact(&server, &digest, IN_TOTO);
    for (artifact_type, file_name, document) in
        [(CYCLONEDX, "sbom.cdx.json", &sbom), (IN_TOTO, "provenance.intoto.json", &statement_bytes)]
    {
        let link = attached_link(&page, artifact_type);
        assert!(link.contains(&format!("download=\"{file_name}\"")), "{link}");
        assert_eq!(&server.get(&attribute(link, "href")).body, document, "the page's {artifact_type} link");
    }
    assert!(page.contains(&format!("href=\"/v2/hello/referrers/{digest}\"")), "{page}");

    // A tag is its own revision.
    let (v1_digest, v1_manifest) = manifest(&server, "hello", "v1", OCI_MANIFEST);
    assert_eq!(v1_manifest["annotations"]["org.opencontainers.image.revision"], v1.as_str());
    assert_eq!(v1_manifest["annotations"]["org.opencontainers.image.version"], "1.0");
    let (_, _, v1_statement) = artifact(&server, &v1_digest, IN_TOTO);
    let v1_statement: Value = serde_json::from_slice(&v1_statement).unwrap();
    assert_eq!(
        v1_statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"],
        v1.as_str()
    );
    let (_, _, v1_sbom) = artifact(&server, &v1_digest, CYCLONEDX);
    let v1_bom: Value = serde_json::from_slice(&v1_sbom).unwrap();
    assert_eq!(v1_bom["metadata"]["component"]["version"], "1.0");

    // The same after a restart, and made again in another state directory.
    server.restart();
    assert_eq!(referrers(&server, &digest, "").body, all.body);
    let again = FlakeforgeServer::start(flake.path(), &[]);
    assert_eq!(manifest(&again, "hello", "latest", OCI_MANIFEST).0, digest);
    assert_eq!(
        referrers(&again, &digest, "").body,
        all.body,
        "another state directory makes the same SBOM and provenance"
    );
    assert!(again.log().contains("attached an SBOM"), "{}", again.log());

    // --no-sbom: the same image, nothing attached.
    let without = FlakeforgeServer::start(flake.path(), &["--no-sbom"]);
    assert_eq!(manifest(&without, "hello", "latest", OCI_MANIFEST).0, digest);
    assert_eq!(referrers(&without, &digest, "").json()["manifests"], serde_json::json!([]));
    let no_tag = without.get(&format!("/v2/hello/manifests/sha256-{}", &digest["sha256:".len()..]));
    assert_eq!(no_tag.status, 404);
    let page = String::from_utf8(without.get("/images/hello").body).unwrap();
    assert!(page.contains("<h1>hello:latest</h1>") && !page.contains("Made of:"), "{page}");
}

#[test]
fn a_conf_image_keeps_its_config_and_lists_its_base_layers() {
    let flake = SbomFlake::new("1.0");
    let server = FlakeforgeServer::start(flake.path(), &[]);
    let (digest, oci) = manifest(&server, "based", "latest", OCI_MANIFEST);
    assert_eq!(oci["annotations"]["org.opencontainers.image.title"], "based");
    assert!(oci["annotations"]["org.opencontainers.image.revision"].as_str().unwrap().starts_with("sha256-"));
    // The config is the conf's: no labels added.
    let config: Value = serde_json::from_slice(&blob(&server, oci["config"]["digest"].as_str().unwrap())).unwrap();
    assert!(config["config"].get("Labels").is_none(), "{config}");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/hello"]));

    let (_, _, sbom) = artifact(&server, &digest, CYCLONEDX);
    assert_valid_cyclonedx(&sbom);
    let bom: Value = serde_json::from_slice(&sbom).unwrap();
    let components = bom["components"].as_array().unwrap();
    let files: Vec<&Value> = components.iter().filter(|c| c["type"] == "file").collect();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(files.len(), 2, "the base layer and the customisation layer: {files:?}");
    assert_eq!(files[0]["name"], "base-image.tar/layer.tar");
    assert_eq!(files[0]["hashes"][0]["content"], diff_ids[0].as_str().unwrap().trim_start_matches("sha256:"));
    assert_eq!(files[1]["name"], "customisation-layer/layer.tar");
    assert_eq!(
        files[1]["hashes"][0]["content"],
        diff_ids.last().unwrap().as_str().unwrap().trim_start_matches("sha256:")
    );
    let names: BTreeSet<&str> =
        components.iter().filter(|c| c["type"] != "file").map(|c| c["name"].as_str().unwrap()).collect();
    for name in ["busybox", "greeting", "hello", "base-image.tar", "customisation-layer"] {
        assert!(names.contains(name), "{name} is not in {names:?}");
    }
    let image_refs = bom["dependencies"][0]["dependsOn"].as_array().unwrap();
    assert!(image_refs.iter().any(|r| r.as_str().unwrap().starts_with("layer:sha256:")), "{image_refs:?}");
}

//! Where an image comes from, as an in-toto statement (v1) with a SLSA
//! provenance predicate (v1): the subjects are the image's manifests (both
//! forms); the build definition is the flake, its locked revision and NAR
//! hash, the attributes and the system built, with the flake's locked
//! inputs as the resolved dependencies; the builder is flakeforge.
//!
//! Unsigned: the statement is served as it is, never wrapped in an
//! envelope. A signature belongs in an artifact of its own that refers to
//! the image (or to this statement's manifest), so this stays the same.
//! Deterministic like the SBOM: no start or finish times.

use serde_json::{json, Map, Value};

use super::origin::ImageOrigin;
use crate::digest::Digest;
use crate::nix::LockedInput;

/// What `buildDefinition.externalParameters` and `internalParameters` mean.
pub const BUILD_TYPE: &str = "urn:flakeforge:build-type:nix-flake-image:v1";
/// Who built it (flakeforge, whichever instance: an unsigned statement
/// names no instance it could not prove).
pub const BUILDER_ID: &str = "urn:flakeforge:builder";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";

/// What the provenance of one image is made from.
pub struct ProvenanceInput<'a> {
    pub origin: &'a ImageOrigin,
    /// The manifests the image is served as: the statement's subjects.
    pub manifests: &'a [Digest],
    /// The registry's settings that shape the image (compression, most layers).
    pub settings: Value,
}

/// The in-toto statement of the image `input` describes, as JSON.
pub fn statement(input: &ProvenanceInput) -> Vec<u8> {
    let origin = input.origin;
    let subjects: Vec<Value> = input
        .manifests
        .iter()
        .map(|digest| json!({ "name": origin.name, "digest": { "sha256": digest.hex() } }))
        .collect();
    let attributes: Vec<&str> = origin.packages.iter().map(|p| p.attr_path.as_str()).collect();
    let mut flake = json!({
        "name": "flake",
        "uri": origin.source_url(),
        "digest": digest_set(Some(&origin.locked.revision), origin.locked.nar_hash.as_deref()),
    });
    if let Some(created) = origin.created() {
        flake["annotations"] = json!({ "lastModified": created });
    }
    let mut dependencies = vec![flake];
    dependencies.extend(origin.locked.inputs.iter().map(input_dependency));
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "flake": origin.flake,
                    "revision": origin.locked.revision,
                    "image": origin.name,
                    "attributes": attributes,
                    "system": origin.system,
                },
                "internalParameters": input.settings,
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": { "id": BUILDER_ID, "version": { "flakeforge": env!("CARGO_PKG_VERSION") } },
            },
        },
    });
    serde_json::to_vec(&statement).expect("statements serialize")
}

fn input_dependency(input: &LockedInput) -> Value {
    json!({
        "name": format!("inputs/{}", input.name),
        "uri": input.url,
        "digest": digest_set(input.revision.as_deref(), input.nar_hash.as_deref()),
    })
}

/// A git commit as `gitCommit`; a NAR hash (`sha256-…`, what Nix locks
/// any source by) as `narHash`, a name of flakeforge's own.
fn digest_set(revision: Option<&str>, nar_hash: Option<&str>) -> Value {
    let mut set = Map::new();
    if let Some(revision) = revision.filter(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit())) {
        set.insert("gitCommit".into(), Value::String(revision.to_ascii_lowercase()));
    }
    if let Some(nar_hash) = nar_hash {
        set.insert("narHash".into(), Value::String(nar_hash.to_owned()));
    }
    Value::Object(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::origin::OriginPackage;
    use crate::nix::LockedFlake;

    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn names_the_revision_the_inputs_and_the_manifests() {
        let origin = ImageOrigin {
            name: "hello".into(),
            flake: "git+file:///srv/images".into(),
            locked: LockedFlake {
                url: format!("git+file:///srv/images?ref=v1&rev={REV}"),
                revision: REV.into(),
                last_modified: Some(1_700_000_000),
                nar_hash: Some("sha256-root".into()),
                inputs: vec![LockedInput {
                    name: "nixpkgs".into(),
                    url: "github:NixOS/nixpkgs/1111111111111111111111111111111111111111".into(),
                    revision: Some("1111111111111111111111111111111111111111".into()),
                    nar_hash: Some("sha256-np".into()),
                }],
            },
            system: "x86_64-linux".into(),
            packages: vec![OriginPackage {
                attr_path: "packages.x86_64-linux.hello".into(),
                outputs: vec![],
                version: None,
            }],
        };
        let manifests = [Digest::of(b"oci"), Digest::of(b"docker")];
        let input =
            ProvenanceInput { origin: &origin, manifests: &manifests, settings: json!({ "compression": "gzip" }) };
        let bytes = statement(&input);
        assert_eq!(bytes, statement(&input));
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed["_type"], STATEMENT_TYPE);
        assert_eq!(parsed["predicateType"], PREDICATE_TYPE);
        assert_eq!(parsed["subject"][1]["digest"]["sha256"], Digest::of(b"docker").hex());
        let definition = &parsed["predicate"]["buildDefinition"];
        assert_eq!(definition["externalParameters"]["revision"], REV);
        assert_eq!(definition["externalParameters"]["attributes"][0], "packages.x86_64-linux.hello");
        assert_eq!(definition["internalParameters"]["compression"], "gzip");
        let flake = &definition["resolvedDependencies"][0];
        // The tag's ref is not part of what was built.
        assert_eq!(flake["uri"], format!("git+file:///srv/images?rev={REV}"));
        assert_eq!(flake["digest"], json!({ "gitCommit": REV, "narHash": "sha256-root" }));
        assert_eq!(flake["annotations"]["lastModified"], "2023-11-14T22:13:20Z");
        let nixpkgs = &definition["resolvedDependencies"][1];
        assert_eq!(nixpkgs["name"], "inputs/nixpkgs");
        assert_eq!(nixpkgs["digest"]["gitCommit"], "1111111111111111111111111111111111111111");
        assert_eq!(parsed["predicate"]["runDetails"]["builder"]["id"], BUILDER_ID);
    }

    #[test]
    fn a_flake_outside_git_is_its_nar_hash() {
        assert_eq!(digest_set(Some("sha256-abc"), Some("sha256-abc")), json!({ "narHash": "sha256-abc" }));
        assert_eq!(digest_set(None, None), json!({}));
    }
}

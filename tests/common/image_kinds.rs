//! A test flake with an image of each kind flakeforge serves as the image
//! it holds (tests/common/flake.rs has confs and plain packages): docker
//! archives the way `docker save` (`tarimage`), `dockerTools.buildImage`
//! (`gzimage`: gzip, `<id>/layer.tar` listed by `manifest.json`) and an old
//! `docker save` (`legacyimage`: `repositories` and `<id>/json` alone)
//! write them, a directory of two archives (`apps`) and an application
//! whose `containers` it is (`myapp`), a nix2container image JSON (`n2c`),
//! a package with an `image` (`dotimage`), an archive with the `stream`
//! buildLayeredImage gives it (`layered`); and broken ones. Built with
//! busybox alone: archives are put together with busybox `tar`, `gzip` and
//! hand-written JSON.
//!
//! Every image runs the same command as user 1000 in `/srv`: it prints
//! `$GREETING`, `id -u`, `pwd` and `/etc/motd` (the nix2container image
//! also the owner and mode its perms give `/srv`, and a file of its
//! `layer-path` layer): what [`expected_output`] says.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use flakeforge::digest::{Digest, HashingWriter};
use flakeforge::image::nix2container::layer::{write_layer, LayerPath};

use super::flake::for_this_machine;
use super::TestFlake;

/// The images pulled and run by every client.
pub const KINDS: [&str; 7] = ["tarimage", "gzimage", "legacyimage", "apps/web", "apps/worker", "n2c", "dotimage"];

const FLAKE: &str = r#####"{
  description = "flakeforge test flake: images of every kind";
  outputs = { self }:
    let
      system = "@SYSTEM@";
      arch = "@ARCH@";
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
      script = name: line: run name ''
        ${bb} mkdir -p $out/bin
        ${bb} printf '#!${busybox}/bin/sh\necho "%s"\n' "$line" > $out/bin/${name}
        ${bb} chmod +x $out/bin/${name}
      '' { inherit line; } // { meta.mainProgram = name; };

      # What every image runs, as user 1000 in /srv.
      imageConfig = kind: more: {
        Cmd = [ "/bin/sh" "-c" "echo $GREETING; id -u; pwd; cat /etc/motd${more}" ];
        Env = [ "PATH=/bin" "GREETING=hello from ${kind}" ];
        User = "1000:1000";
        WorkingDir = "/srv";
        Labels = { "org.example.kind" = kind; };
        ExposedPorts = { "8080/tcp" = { }; };
      };

      # A docker archive of two layers (busybox at /bin; /etc/motd) as `docker save`
      # ("save"), buildImage ("buildimage") or an old docker save ("legacy") lays it out.
      archive = { kind, layout ? "save", gzip ? false, truncate ? false, wrongDiffId ? false }:
        run "${kind}.tar${if gzip then ".gz" else ""}" ''
          set -e
          PATH=${busybox}/bin
          mkdir -p l1/bin l1/srv l2/etc image
          cp ${bb} l1/bin/busybox
          for a in sh echo id pwd cat stat; do ln -s busybox l1/bin/$a; done
          echo "motd of ${kind}" > l2/etc/motd
          tar -C l1 -cf l1.tar bin srv
          tar -C l2 -cf l2.tar etc
          d1=$(sha256sum l1.tar | cut -d' ' -f1)
          d2=$(sha256sum l2.tar | cut -d' ' -f1)
          if [ -n "${if wrongDiffId then "1" else ""}" ]; then d2=$(echo other | sha256sum | cut -d' ' -f1); fi
          printf '%s' "$cfg" | sed 's/}$//' > config.json
          printf ',"rootfs":{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]}}' $d1 $d2 >> config.json
          id1=$(echo ${kind}-1 | sha256sum | cut -d' ' -f1)
          id2=$(echo ${kind}-2 | sha256sum | cut -d' ' -f1)
          case ${layout} in
            save)
              mv l1.tar image/layer1.tar; mv l2.tar image/layer2.tar; cp config.json image/config.json
              printf '[{"Config":"config.json","RepoTags":["${kind}:latest"],"Layers":["layer1.tar","layer2.tar"]}]' > image/manifest.json
              members="layer1.tar layer2.tar config.json manifest.json" ;;
            buildimage)
              mkdir image/$id1 image/$id2
              mv l1.tar image/$id1/layer.tar; mv l2.tar image/$id2/layer.tar
              echo 1.0 > image/$id1/VERSION; echo 1.0 > image/$id2/VERSION
              printf '{"id":"%s"}' $id1 > image/$id1/json
              printf '{"id":"%s","parent":"%s"}' $id2 $id1 > image/$id2/json
              c=$(sha256sum config.json | cut -d' ' -f1); cp config.json image/$c.json
              printf '[{"Config":"%s.json","RepoTags":["${kind}:latest"],"Layers":["%s/layer.tar","%s/layer.tar"]}]' $c $id1 $id2 > image/manifest.json
              printf '{"${kind}":{"latest":"%s"}}' $id2 > image/repositories
              members="$id1 $id2 $c.json manifest.json repositories" ;;
            legacy)
              mkdir image/$id1 image/$id2
              mv l1.tar image/$id1/layer.tar; mv l2.tar image/$id2/layer.tar
              printf '{"id":"%s","created":"2024-01-02T03:04:05Z"}' $id1 > image/$id1/json
              printf '%s' "$cfg" | sed "s/}\$/,\"id\":\"$id2\",\"parent\":\"$id1\"}/" > image/$id2/json
              printf '{"${kind}":{"latest":"%s"}}' $id2 > image/repositories
              members="$id1 $id2 repositories" ;;
          esac
          tar -C image -cf archive.tar $members
          if [ -n "${if gzip then "1" else ""}" ]; then gzip -c archive.tar > archive; else mv archive.tar archive; fi
          if [ -n "${if truncate then "1" else ""}" ]; then head -c $(( $(stat -c %s archive) / 2 )) archive > $out; else mv archive $out; fi
        '' {
          cfg = builtins.toJSON {
            architecture = arch;
            os = "linux";
            created = "2024-01-02T03:04:05Z";
            config = imageConfig kind "";
          };
        };

      apps = run "apps" ''
        ${bb} mkdir $out
        ${bb} ln -s ${archive { kind = "web"; gzip = true; }} $out/web.tar.gz
        ${bb} ln -s ${archive { kind = "worker"; layout = "buildimage"; }} $out/worker.tar
        ${bb} echo "services: {}" > $out/compose.yaml
      '' { };

      # nix2container: busybox as a store path; a root copied to / (copyToRoot)
      # whose /srv its perms give to 1000 with mode 0750; a layer-path tarball.
      n2cRoot = run "n2c-root" ''
        set -e
        PATH=${busybox}/bin
        mkdir -p $out/bin $out/etc $out/srv
        for a in sh echo id pwd cat stat; do ln -s ${busybox}/bin/busybox $out/bin/$a; done
        echo "motd of n2c" > $out/etc/motd
      '' { };
      n2cExtra = run "n2c-extra" ''
        set -e
        PATH=${busybox}/bin
        mkdir -p x/etc $out
        echo "from a layer-path tarball" > x/etc/n2c-extra
        tar -C x -cf layer.tar etc
        sha256sum layer.tar | cut -d' ' -f1 > $out/diff_id
        gzip -c layer.tar > $out/layer.tar.gz
      '' { };
      n2cImage = name: diffIds: run "image-${name}.json" ''
        ${bb} printf '%s' "$json" | ${bb} sed "s/@EXTRA@/$(${bb} cat ${n2cExtra}/diff_id)/g" > $out
      '' {
        json = builtins.toJSON {
          version = 1;
          image-config = imageConfig "n2c" "; stat -c '%u %a' /srv; cat /etc/n2c-extra";
          layers = [
            {
              digest = builtins.elemAt diffIds 0; size = 0; diff_ids = builtins.elemAt diffIds 0;
              paths = [ { path = "${busybox}"; } ];
              mediatype = "application/vnd.oci.image.layer.v1.tar";
              History = { created_by = "nix2container"; };
            }
            {
              digest = builtins.elemAt diffIds 1; size = 0; diff_ids = builtins.elemAt diffIds 1;
              paths = [ {
                path = "${n2cRoot}";
                options = {
                  rewrite = { regex = "^${n2cRoot}"; repl = ""; };
                  perms = [ { regex = "^${n2cRoot}/srv$"; mode = "0750"; uid = 1000; gid = 1000; uname = "app"; gname = "app"; } ];
                };
              } ];
              mediatype = "application/vnd.oci.image.layer.v1.tar";
            }
            {
              digest = "sha256:@EXTRA@"; size = 0; diff_ids = "sha256:@EXTRA@";
              layer-path = "${n2cExtra}/layer.tar.gz";
              mediatype = "application/vnd.oci.image.layer.v1.tar+gzip";
            }
          ];
          inherit arch;
          created = "2024-01-02T03:04:05Z";
        };
      };
      zeros = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

      # As buildLayeredImage: an archive whose `stream` is the streamLayeredImage it is
      # made from. (Here the two differ, to tell which one is served: the stream.)
      layeredCustomisation = run "layered-customisation" ''
        set -e
        PATH=${busybox}/bin
        mkdir -p root/bin root/srv root/etc $out
        for a in sh echo id pwd cat; do ln -s ${busybox}/bin/busybox root/bin/$a; done
        echo "motd of layered" > root/etc/motd
        tar -C root -cf $out/layer.tar bin srv etc
      '' { };
      layeredConf = run "layered-conf.json" ''${bb} printf '%s' "$conf" > $out'' {
        conf = builtins.toJSON {
          architecture = arch;
          config = imageConfig "layered" "";
          created = "2024-01-02T03:04:05Z";
          mtime = "1970-01-01T00:00:01Z";
          uid = 0; gid = 0; uname = "root"; gname = "root";
          store_dir = "/nix/store";
          store_layers = [ [ "${busybox}" ] ];
          customisation_layer = "${layeredCustomisation}";
          from_image = null;
          repo_tag = "layered:latest";
        };
      };
      stream = run "stream-layered" "${bb} echo not a script > $out" { } // { conf = layeredConf; };
    in {
      packages.${system} = {
        tarimage = archive { kind = "tarimage"; };
        gzimage = archive { kind = "gzimage"; layout = "buildimage"; gzip = true; };
        legacyimage = archive { kind = "legacyimage"; layout = "legacy"; };
        inherit apps;
        myapp = script "myapp" "the application itself" // { containers = apps; };
        dotimage = script "dotimage" "the package itself" // { image = archive { kind = "dotimage"; gzip = true; }; };
        layered = archive { kind = "layered-archive"; gzip = true; } // { inherit stream; };
        # The diff_ids of its store-path layers are what flakeforge must make of them (written by the test).
        n2c = n2cImage "n2c" (builtins.fromJSON (builtins.readFile ./n2c-diff-ids.json));
        # Broken images: each must be a clear build error.
        badn2c = n2cImage "badn2c" [ zeros zeros ];
        truncatedgz = archive { kind = "truncatedgz"; gzip = true; truncate = true; };
        truncatedtar = archive { kind = "truncatedtar"; truncate = true; };
        wrongdiffid = archive { kind = "wrongdiffid"; wrongDiffId = true; };
      };
    };
}
"#####;

/// The flake, with the diff_ids of the nix2container image's store-path
/// layers computed from its broken twin's layers (same paths and options).
pub fn image_kinds_flake() -> TestFlake {
    let flake = TestFlake::with_text(&for_this_machine(FLAKE));
    let zeros = format!("sha256:{}", "0".repeat(64));
    fs::write(flake.path().join("n2c-diff-ids.json"), serde_json::json!([zeros, zeros]).to_string()).unwrap();
    let twin: serde_json::Value = serde_json::from_slice(&fs::read(flake.build("badn2c")).unwrap()).unwrap();
    let diff_ids: Vec<String> = twin["layers"].as_array().unwrap()[..2]
        .iter()
        .map(|layer| {
            let paths: Vec<LayerPath> = serde_json::from_value(layer["paths"].clone()).unwrap();
            let (digest, _, _) = write_layer(HashingWriter::new(std::io::sink()), &paths).unwrap().finish();
            digest.to_string()
        })
        .collect();
    fs::write(flake.path().join("n2c-diff-ids.json"), serde_json::json!(diff_ids).to_string()).unwrap();
    flake
}

/// What running image `name` prints.
pub fn expected_output(name: &str) -> String {
    let kind = name.rsplit('/').next().unwrap();
    let mut lines = vec![format!("hello from {kind}"), "1000".into(), "/srv".into(), format!("motd of {kind}")];
    if kind == "n2c" {
        lines.extend(["1000 750".into(), "from a layer-path tarball".into()]);
    }
    lines.join("\n")
}

/// What image `name` declares: its layers' diff_ids and, where it has one
/// of its own, its config blob.
pub struct Declared {
    pub diff_ids: Vec<String>,
    pub config: Option<Vec<u8>>,
}

/// Read from the archive (or JSON) the flake built, independently of flakeforge's reader.
pub fn declared(flake: &TestFlake, name: &str) -> Declared {
    let output = match name.split_once('/') {
        Some((directory, image)) => {
            let dir = flake.build(directory);
            ["tar", "tar.gz"].iter().map(|ext| dir.join(format!("{image}.{ext}"))).find(|p| p.exists()).unwrap()
        }
        None if name == "dotimage" => flake.build("dotimage.image"),
        None => flake.build(name),
    };
    if name == "n2c" {
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&output).unwrap()).unwrap();
        let layers = json["layers"].as_array().unwrap();
        let diff_ids = layers.iter().map(|l| l["diff_ids"].as_str().unwrap().to_string()).collect();
        return Declared { diff_ids, config: None };
    }
    let member = |wanted: &str| member_of(&output, wanted);
    if let Some(manifest) = member("manifest.json") {
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let config = member(manifest[0]["Config"].as_str().unwrap()).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&config).unwrap();
        let diff_ids = parsed["rootfs"]["diff_ids"].as_array().unwrap();
        let diff_ids = diff_ids.iter().map(|d| d.as_str().unwrap().to_string()).collect();
        return Declared { diff_ids, config: Some(config) };
    }
    // An old archive declares no diff_ids: its layers, root first, are what they hash to.
    let repositories: serde_json::Value = serde_json::from_slice(&member("repositories").unwrap()).unwrap();
    let mut id = repositories.as_object().unwrap().values().next().unwrap()["latest"].as_str().unwrap().to_string();
    let mut diff_ids = Vec::new();
    loop {
        diff_ids.insert(0, Digest::of(&member(&format!("{id}/layer.tar")).unwrap()).to_string());
        let json: serde_json::Value = serde_json::from_slice(&member(&format!("{id}/json")).unwrap()).unwrap();
        match json["parent"].as_str() {
            Some(parent) => id = parent.to_string(),
            None => break,
        }
    }
    Declared { diff_ids, config: None }
}

/// One member of a plain or gzip tarball.
fn member_of(archive: &Path, wanted: &str) -> Option<Vec<u8>> {
    let bytes = fs::read(archive).unwrap();
    let data: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&bytes[..]))
    } else {
        Box::new(&bytes[..])
    };
    let mut tarball = tar::Archive::new(data);
    for entry in tarball.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == PathBuf::from(wanted) {
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            return Some(content);
        }
    }
    None
}

//! A build output as flakeforge tells its kind and reads it: docker
//! archives (plain, gzip or zstd; `manifest.json` or `repositories`, as a
//! `from_image` base too), confs and nix2container JSON. Any bytes are
//! classified, and an archive read as an image has its recipe and every
//! layer copied out, or refused with an error, never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use flakeforge::image::archive;
use flakeforge::image::output::{self, OutputKind};
use flakeforge::image::{conf::LayeredImageConf, nix2container};
use libfuzzer_sys::fuzz_target;

/// The readers work on files: the input goes into one (in memory where there is /dev/shm).
static FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = ["/dev/shm", "/tmp"].map(PathBuf::from).into_iter().find(|d| d.is_dir()).unwrap();
    dir.join(format!("flakeforge-fuzz-output-{}", std::process::id()))
});

fuzz_target!(|data: &[u8]| {
    std::fs::write(&*FILE, data).unwrap();
    match output::classify(&FILE) {
        Ok(OutputKind::DockerArchive(image)) => {
            let _ = image.container_config();
            let _ = image.recipe(&FILE, "x86_64-linux");
            for layer in &image.layers {
                let _ = archive::copy_member(&FILE, &layer.member, &mut std::io::sink());
            }
        }
        Ok(OutputKind::Conf) => {
            if let Ok(conf) = LayeredImageConf::parse(data) {
                let _ = (conf.ownership(), conf.created_iso());
            }
        }
        Ok(OutputKind::Nix2Container(json)) => {
            let _ = nix2container::recipe(&json, "aarch64-linux");
        }
        Ok(OutputKind::Package) | Err(_) => {}
    }
});

//! From an image name and tag to an image plan: which flake attributes,
//! what Nix builds, and the layers and config that result. Images defined
//! with `dockerTools.streamLayeredImage` follow their conf; any other
//! package becomes its closure split by popularity plus flakeforge's rootfs layer.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ServiceError;
use crate::config::Config;
use crate::digest::Digest;
use crate::image::base_image::BaseImage;
use crate::image::conf::LayeredImageConf;
use crate::image::layer::LayerSource;
use crate::image::manifest::{ImageConfig, Platform};
use crate::image::{popularity, Ownership};
use crate::nix::{attr, flakeref, Nix};
use crate::reference::{RepoName, Tag};

/// Everything needed to generate an image, before any layer is written.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub layers: Vec<LayerSource>,
    #[serde(skip)]
    pub config: ImageConfig,
    /// What identifies the config in the plan's key.
    config_key: serde_json::Value,
    #[serde(skip)]
    pub gcroots: Vec<PathBuf>,
}

impl ImagePlan {
    fn new(layers: Vec<LayerSource>, config: ImageConfig, gcroots: Vec<PathBuf>) -> Self {
        let config_key = serde_json::json!([config.platform, config.created, config.config]);
        ImagePlan { layers, config, config_key, gcroots }
    }

    /// Identifies the image this plan generates: the same key, the same digests.
    pub fn key(&self, config: &Config) -> Digest {
        let identity = serde_json::json!({
            "version": 1,
            "plan": self,
            "compression": config.compression,
        });
        Digest::of(&serde_json::to_vec(&identity).expect("plans serialize"))
    }
}

/// Resolves, builds and plans the image `name:tag` with Nix.
pub fn plan_image(
    config: &Config,
    nix: &Nix,
    name: &RepoName,
    tag: &Tag,
    system: &str,
) -> Result<ImagePlan, ServiceError> {
    let flake = flakeref::for_tag(&config.flake, tag.as_str())?;
    let roots_dir = gcroots_dir(config, name, tag, system);
    fs::create_dir_all(&roots_dir).map_err(|e| ServiceError::internal("creating the GC root directory", e))?;

    let segments = name.packages();
    let mut packages = Vec::new();
    for segment in &segments {
        packages.push(attr::resolve(nix, &flake, system, segment)?);
    }

    if let [package] = packages.as_slice() {
        if package.has_conf {
            let link = roots_dir.join(segments[0]);
            let outputs = nix.build(&format!("{flake}#{}.conf", package.attr_path), &link)?;
            let conf_path = outputs.first().ok_or_else(|| ServiceError::Internal("nix built no output".into()))?;
            return conf_image(conf_path, system, out_links(&roots_dir));
        }
    }

    let mut outputs = Vec::new();
    let mut main_program = None;
    for (segment, package) in segments.iter().zip(&packages) {
        let built = nix.build(&format!("{flake}#{}", package.attr_path), &roots_dir.join(segment))?;
        if main_program.is_none() {
            main_program.clone_from(&package.main_program);
        }
        outputs.extend(built);
    }
    let gcroots = out_links(&roots_dir);
    // A package whose output is itself a conf file (`streamLayeredImageConf`).
    if let [single] = outputs.as_slice() {
        if single.is_file() {
            if let Ok(plan) = conf_image(single, system, gcroots.clone()) {
                return Ok(plan);
            }
        }
    }
    package_image(config, nix, system, outputs, main_program, gcroots)
}

/// `<state>/gcroots/<hash of name, tag and system>/`: one directory per image.
fn gcroots_dir(config: &Config, name: &RepoName, tag: &Tag, system: &str) -> PathBuf {
    let id = Digest::of(format!("{}:{}@{system}", name.canonical(), tag).as_bytes());
    config.state_dir.join("gcroots").join(&id.hex()[..32])
}

/// The out-links `nix build` made (`NAME`, `NAME-<output>`): the image's GC roots.
fn out_links(roots_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(roots_dir) else { return Vec::new() };
    let mut links: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.is_symlink()).collect();
    links.sort();
    links
}

fn conf_image(conf_path: &Path, system: &str, gcroots: Vec<PathBuf>) -> Result<ImagePlan, ServiceError> {
    let bytes = fs::read(conf_path).map_err(|e| ServiceError::internal("reading the image conf", e))?;
    let conf = LayeredImageConf::parse(&bytes).map_err(|e| ServiceError::Build {
        message: format!("the image conf is not usable: {e}"),
        log_tail: String::new(),
    })?;
    let bad_conf = |e: crate::image::conf::ConfError| ServiceError::Build {
        message: format!("the image conf is not usable: {e}"),
        log_tail: String::new(),
    };
    let owner = conf.ownership().map_err(bad_conf)?;

    let mut layers = Vec::new();
    let mut base_config = None;
    if let Some(archive) = &conf.from_image {
        let archive = PathBuf::from(archive);
        let base =
            BaseImage::open(&archive).map_err(|e| ServiceError::internal("reading the from_image archive", e))?;
        layers.extend(
            base.layers.iter().map(|l| LayerSource::BaseImage { archive: archive.clone(), member: l.member.clone() }),
        );
        base_config = base.image_config.get("config").cloned();
    }
    layers.extend(conf.store_layers.iter().map(|paths| LayerSource::StorePaths {
        paths: paths.iter().map(PathBuf::from).collect(),
        owner: owner.clone(),
    }));
    layers.push(LayerSource::TarFile { path: Path::new(&conf.customisation_layer).join("layer.tar") });

    // The conf names the architecture; the system it was built for adds the variant (arm64 → v8).
    let variant =
        Platform::of_nix_system(system).filter(|p| p.architecture == conf.architecture).and_then(|p| p.variant);
    let platform = Platform { architecture: conf.architecture.clone(), os: "linux".into(), variant };
    let image = ImageConfig {
        platform,
        created: conf.created_iso().map_err(bad_conf)?,
        config: conf.merged_config(base_config.as_ref()),
    };
    Ok(ImagePlan::new(layers, image, gcroots))
}

fn package_image(
    config: &Config,
    nix: &Nix,
    system: &str,
    outputs: Vec<PathBuf>,
    main_program: Option<String>,
    gcroots: Vec<PathBuf>,
) -> Result<ImagePlan, ServiceError> {
    let closure = nix.closure(&outputs)?;
    // One layer is flakeforge's own rootfs layer.
    let store_layers = popularity::layers_by_popularity(&closure, &outputs, config.max_layers.saturating_sub(1).max(1));
    let owner = Ownership::default();
    let mut layers: Vec<LayerSource> =
        store_layers.into_iter().map(|paths| LayerSource::StorePaths { paths, owner: owner.clone() }).collect();
    layers.push(LayerSource::Rootfs { packages: outputs, owner });

    let mut image_config = serde_json::json!({ "Env": ["PATH=/bin"] });
    if let Some(program) = main_program {
        image_config["Cmd"] = serde_json::json!([format!("/bin/{program}")]);
    }
    let platform = Platform::of_nix_system(system)
        .ok_or_else(|| ServiceError::Internal(format!("{system} has no OCI platform")))?;
    let image = ImageConfig { platform, created: "1970-01-01T00:00:01Z".into(), config: image_config };
    Ok(ImagePlan::new(layers, image, gcroots))
}

//! From an image name and tag to an image plan: which flake attributes,
//! what Nix builds, and the layers and config that result. Images defined
//! with `dockerTools.streamLayeredImage` follow their conf; an attribute
//! with an image of its own (`image`, a buildLayeredImage's `stream`) is
//! served as that; a docker archive or nix2container JSON is served as the
//! image it holds (`image::output` tells the kinds apart); `a/b` is image
//! `b` of `a` when `a` is a directory of images; any other package becomes
//! its closure split by popularity plus flakeforge's rootfs layer. Every
//! plan says where the image comes from ([`ImageOrigin`]): annotations on
//! its manifest and, in a config of flakeforge's own, the same as labels.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ServiceError;
use crate::config::Config;
use crate::digest::Digest;
use crate::image::conf::LayeredImageConf;
use crate::image::docker_archive::DockerArchive;
use crate::image::layer::LayerSource;
use crate::image::manifest::{ImageConfig, Platform};
use crate::image::origin::{ImageOrigin, OriginPackage};
use crate::image::output::{self, OutputKind};
use crate::image::{nix2container, popularity, ImageRecipe, InvalidImage, Ownership};
use crate::nix::{attr, LockedFlake, Nix, NixError};
use crate::reference::{RepoName, Tag};
use crate::storage;

/// Everything needed to generate an image, before any layer is written.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub layers: Vec<LayerSource>,
    #[serde(skip)]
    pub config: ImageConfig,
    /// What identifies the config in the plan's key.
    config_key: serde_json::Value,
    /// The annotations of the OCI manifest.
    pub annotations: BTreeMap<String, String>,
    #[serde(skip)]
    pub gcroots: Vec<PathBuf>,
    /// Where the image comes from (set by [`plan_image`] on every plan it returns).
    #[serde(skip)]
    pub origin: Option<ImageOrigin>,
    /// The config is flakeforge's own (a plain package's), not one an image
    /// definition fixed: it gets the annotations as labels too.
    #[serde(skip)]
    own_config: bool,
}

impl ImagePlan {
    fn new(layers: Vec<LayerSource>, config: ImageConfig, gcroots: Vec<PathBuf>) -> Self {
        let config_key = config_key(&config);
        ImagePlan { layers, config, config_key, annotations: BTreeMap::new(), gcroots, origin: None, own_config: false }
    }

    fn of_recipe(recipe: ImageRecipe, gcroots: Vec<PathBuf>) -> Self {
        Self::new(recipe.layers, recipe.config, gcroots)
    }

    /// Says where the image comes from: the manifest's annotations, and the
    /// config's labels where the config is flakeforge's. Confs, docker
    /// archives and nix2container images keep their configs as they are
    /// (`docker load` of the same image gives the same config).
    fn described_by(mut self, origin: ImageOrigin) -> Self {
        self.annotations = origin.annotations();
        if self.own_config {
            self.config.config["Labels"] = serde_json::json!(self.annotations);
            self.config_key = config_key(&self.config);
        }
        self.origin = Some(origin);
        self
    }

    /// Identifies the image this plan generates: the same key, the same digests.
    pub fn key(&self, config: &Config) -> Digest {
        let identity = serde_json::json!({
            "version": 2,
            "plan": self,
            "compression": config.compression,
        });
        Digest::of(&serde_json::to_vec(&identity).expect("plans serialize"))
    }
}

fn config_key(config: &ImageConfig) -> serde_json::Value {
    let key = serde_json::json!([config.platform, config.created, config.config]);
    match &config.blob {
        Some(blob) => serde_json::json!([key, Digest::of(blob)]),
        None => key,
    }
}

/// Resolves, builds and plans the image `name:tag` with Nix, from `flake`
/// (the revision `tag` stands for).
pub fn plan_image(
    config: &Config,
    nix: &Nix,
    flake: &LockedFlake,
    name: &RepoName,
    tag: &Tag,
    system: &str,
) -> Result<ImagePlan, ServiceError> {
    let mut origin = ImageOrigin {
        // `a/b` and `b/a` compose one image (made image `b` of directory `a` below).
        name: name.packages().join("/"),
        flake: config.flake.clone(),
        locked: flake.clone(),
        system: system.to_owned(),
        packages: Vec::new(),
    };
    let plan = plan_contents(config, nix, name, tag, &mut origin)?;
    Ok(plan.described_by(origin))
}

/// The layers and config of [`plan_image`] (of the revision and system
/// `origin` names), noting in `origin` the packages built.
fn plan_contents(
    config: &Config,
    nix: &Nix,
    name: &RepoName,
    tag: &Tag,
    origin: &mut ImageOrigin,
) -> Result<ImagePlan, ServiceError> {
    // Copies: `origin` takes the packages as they are built.
    let flake: &LockedFlake = &origin.locked.clone();
    let system: &str = &origin.system.clone();
    let roots = GcRoots::new(gcroots_dir(config, name, tag, system))?;

    // `a/b` first: image `b` of directory `a`, if `a` is one.
    let mut prebuilt = None;
    if let Some((directory, image)) = name.directory_and_image() {
        match directory_image(nix, flake, system, &roots, directory, image)? {
            Directory::Image(package, archive) => {
                origin.name = name.as_str().to_owned();
                origin.packages.push(package);
                return archive_image(&archive, system, roots.links());
            }
            Directory::Built(package, outputs) => prebuilt = Some((directory, package, outputs)),
            Directory::None => {}
        }
    }

    let segments = name.packages();
    let mut packages = Vec::new();
    for segment in &segments {
        packages.push(match &prebuilt {
            Some((built, package, _)) if built == segment => package.clone(),
            _ => attr::resolve(nix, flake, system, segment)?,
        });
    }

    if let [package] = packages.as_slice() {
        if package.has_conf {
            let outputs = roots.build(nix, &format!("{flake}#{}.conf", package.attr_path), segments[0])?;
            let conf_path =
                outputs.first().cloned().ok_or_else(|| ServiceError::Internal("nix built no output".into()))?;
            origin.packages.push(origin_package(package, outputs));
            return conf_image(&conf_path, system, roots.links());
        }
        if let Some(image_attr) = &package.image_attr {
            let outputs = roots.build(nix, &format!("{flake}#{}.{image_attr}", package.attr_path), segments[0])?;
            let image = outputs.first().cloned().ok_or_else(|| ServiceError::Internal("nix built no output".into()))?;
            origin.packages.push(origin_package(package, outputs));
            return output_image(config, nix, system, &image, None, roots.links());
        }
    }

    let mut outputs = Vec::new();
    let mut main_program = None;
    for (segment, package) in segments.iter().zip(&packages) {
        let built = match prebuilt.take_if(|(built, _, _)| built == segment) {
            Some((_, _, built)) => built,
            None => roots.build(nix, &format!("{flake}#{}", package.attr_path), segment)?,
        };
        if main_program.is_none() {
            main_program.clone_from(&package.main_program);
        }
        outputs.extend(built.iter().cloned());
        origin.packages.push(origin_package(package, built));
    }
    let gcroots = roots.links();
    match outputs.as_slice() {
        [single] => output_image(config, nix, system, single, main_program, gcroots),
        _ => package_image(config, nix, system, outputs, main_program, gcroots),
    }
}

fn origin_package(package: &attr::Package, outputs: Vec<PathBuf>) -> OriginPackage {
    OriginPackage { attr_path: package.attr_path.clone(), outputs, version: package.version.clone() }
}

/// What the first segment of `a/b` turned out to be.
enum Directory {
    /// A directory (what was built of it) holding archive `b`.
    Image(OriginPackage, PathBuf),
    /// Not a directory of images: `a` as resolved and built, for composing it with `b`.
    Built(attr::Package, Vec<PathBuf>),
    /// Nothing to reuse: `a` is missing, or its `containers` were built instead of it.
    None,
}

/// Builds `directory` (or its `containers`, nix-forge's applications) and
/// looks for archive `image` in it.
fn directory_image(
    nix: &Nix,
    flake: &LockedFlake,
    system: &str,
    roots: &GcRoots,
    directory: &str,
    image: &str,
) -> Result<Directory, ServiceError> {
    let package = match attr::resolve(nix, flake, system, directory) {
        Ok(package) => package,
        Err(NixError::AttrNotFound { .. }) => return Ok(Directory::None),
        Err(err) => return Err(err.into()),
    };
    let (attr_path, link) = match package.has_containers {
        true => (format!("{}.containers", package.attr_path), format!("{directory}.containers")),
        false => (package.attr_path.clone(), directory.to_string()),
    };
    let outputs = roots.build(nix, &format!("{flake}#{attr_path}"), &link)?;
    let images = match outputs.as_slice() {
        [single] => output::directory_images(single),
        _ => Default::default(),
    };
    if let Some(archive) = images.get(image) {
        let built = OriginPackage { attr_path, outputs: outputs.clone(), version: package.version.clone() };
        return Ok(Directory::Image(built, archive.clone()));
    }
    if !images.is_empty() && matches!(attr::resolve(nix, flake, system, image), Err(NixError::AttrNotFound { .. })) {
        let listed = images.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
        return Err(ServiceError::NameUnknown(format!("{directory} holds no image {image} (it holds {listed})")));
    }
    Ok(if package.has_containers { Directory::None } else { Directory::Built(package, outputs) })
}

/// The image an attribute's single output holds, by its kind.
fn output_image(
    config: &Config,
    nix: &Nix,
    system: &str,
    output: &Path,
    main_program: Option<String>,
    gcroots: Vec<PathBuf>,
) -> Result<ImagePlan, ServiceError> {
    match output::classify(output)? {
        OutputKind::Conf => conf_image(output, system, gcroots),
        OutputKind::DockerArchive(image) => Ok(ImagePlan::of_recipe(image.recipe(output, system)?, gcroots)),
        OutputKind::Nix2Container(json) => Ok(ImagePlan::of_recipe(nix2container::recipe(&json, system)?, gcroots)),
        OutputKind::Package => package_image(config, nix, system, vec![output.to_path_buf()], main_program, gcroots),
    }
}

/// The docker archive `archive` of an image directory.
fn archive_image(archive: &Path, system: &str, gcroots: Vec<PathBuf>) -> Result<ImagePlan, ServiceError> {
    // The store file itself, not the directory's symlink to it: one recipe per archive.
    let archive = fs::canonicalize(archive).map_err(|e| ServiceError::internal("reading an image directory", e))?;
    let image = DockerArchive::open(&archive)?.ok_or_else(|| {
        let file = archive.file_name().unwrap_or_default().to_string_lossy();
        InvalidImage(format!("{file} in the image directory is no docker archive"))
    })?;
    Ok(ImagePlan::of_recipe(image.recipe(&archive, system)?, gcroots))
}

/// `<state>/gcroots/<hash of name, tag and system>/`: one directory per image.
fn gcroots_dir(config: &Config, name: &RepoName, tag: &Tag, system: &str) -> PathBuf {
    let id = Digest::of(format!("{}:{}@{system}", name.canonical(), tag).as_bytes());
    config.state_dir.join("gcroots").join(&id.hex()[..32])
}

/// Where an image's builds keep their GC roots, if they can: on a
/// read-only state directory nothing is written, and the links already
/// there keep what they held.
struct GcRoots {
    dir: PathBuf,
    writable: bool,
}

impl GcRoots {
    fn new(dir: PathBuf) -> Result<GcRoots, ServiceError> {
        let writable = match fs::create_dir_all(&dir) {
            Ok(()) => storage::fs::is_writable(&dir),
            Err(err) if err.kind() == io::ErrorKind::ReadOnlyFilesystem => false,
            Err(err) => return Err(ServiceError::internal("creating the GC root directory", err)),
        };
        Ok(GcRoots { dir, writable })
    }

    /// `nix build` of `installable`, rooted at `<dir>/<link>` when that can be written.
    fn build(&self, nix: &Nix, installable: &str, link: &str) -> Result<Vec<PathBuf>, ServiceError> {
        if self.writable {
            return Ok(nix.build(installable, &self.dir.join(link))?);
        }
        let outputs = nix.build_unrooted(installable)?;
        let held: Vec<PathBuf> = self.links().iter().filter_map(|l| fs::read_link(l).ok()).collect();
        for output in outputs.iter().filter(|output| !held.contains(output)) {
            log::warn!("{} cannot be written: no GC root keeps {}", self.dir.display(), output.display());
        }
        Ok(outputs)
    }

    /// The out-links `nix build` made (`NAME`, `NAME-<output>`): the image's GC roots.
    fn links(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.dir) else { return Vec::new() };
        let mut links: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.is_symlink()).collect();
        links.sort();
        links
    }
}

fn conf_image(conf_path: &Path, system: &str, gcroots: Vec<PathBuf>) -> Result<ImagePlan, ServiceError> {
    let bytes = fs::read(conf_path).map_err(|e| ServiceError::internal("reading the image conf", e))?;
    let conf = LayeredImageConf::parse(&bytes)
        .map_err(|e| ServiceError::Build { message: format!("the image conf is not usable: {e}"), build: None })?;
    let bad_conf = |e: crate::image::conf::ConfError| ServiceError::Build {
        message: format!("the image conf is not usable: {e}"),
        build: None,
    };
    let owner = conf.ownership().map_err(bad_conf)?;

    let mut layers = Vec::new();
    let mut base_config = None;
    if let Some(archive) = &conf.from_image {
        let archive = PathBuf::from(archive);
        let base = DockerArchive::open(&archive)?
            .ok_or_else(|| InvalidImage("the conf's from_image is no docker archive".into()))?;
        layers.extend(base.recipe(&archive, system)?.layers);
        base_config = base.container_config().cloned();
    }
    layers.extend(conf.store_layers.iter().map(|paths| LayerSource::StorePaths {
        paths: paths.iter().map(PathBuf::from).collect(),
        owner: owner.clone(),
    }));
    layers.push(LayerSource::TarFile { path: Path::new(&conf.customisation_layer).join("layer.tar"), diff_id: None });

    // The conf names the architecture; the system it was built for adds the variant (arm64 → v8).
    let platform = Platform::declared(Some(&conf.architecture), None, None, system)
        .ok_or_else(|| ServiceError::Internal(format!("{system} has no OCI platform")))?;
    let image = ImageConfig {
        platform,
        created: conf.created_iso().map_err(bad_conf)?,
        config: conf.merged_config(base_config.as_ref()),
        blob: None,
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
    let image = ImageConfig { platform, created: "1970-01-01T00:00:01Z".into(), config: image_config, blob: None };
    Ok(ImagePlan { own_config: true, ..ImagePlan::new(layers, image, gcroots) })
}

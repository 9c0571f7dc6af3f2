//! Resolving `name:tag`: one build per image at a time, the systems of a
//! tag built concurrently, and with several systems an image index (or
//! Docker manifest list) over the platforms that built.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{plan, ResolvedTag, Service, ServiceError};
use crate::cache::ImageRecord;
use crate::image::manifest;
use crate::media_type::ManifestFormat;
use crate::reference::{RepoName, Tag};

impl Service {
    /// The manifests for `name:tag`, building the image if needed. Concurrent
    /// callers for the same image share one build.
    pub fn resolve(&self, name: &RepoName, tag: &Tag) -> Result<ResolvedTag, ServiceError> {
        let canonical = name.canonical();
        if let Some(resolved) = self.tags.get(&canonical, tag.as_str()) {
            return Ok(resolved);
        }
        let abandoned = Err(ServiceError::Internal("the build was abandoned".into()));
        self.flights.run((canonical.clone(), tag.to_string()), abandoned, || {
            if let Some(resolved) = self.tags.get(&canonical, tag.as_str()) {
                return Ok(resolved);
            }
            let resolved = self.build_tag(name, tag)?;
            self.tags.insert(&canonical, tag.as_str(), resolved.clone(), tag.is_revision());
            Ok(resolved)
        })
    }

    fn build_tag(&self, name: &RepoName, tag: &Tag) -> Result<ResolvedTag, ServiceError> {
        let systems = &self.config.systems;
        let results: Vec<Result<ImageRecord, ServiceError>> = std::thread::scope(|scope| {
            let builds: Vec<_> =
                systems.iter().map(|system| scope.spawn(|| self.build_image(name, tag, system))).collect();
            builds
                .into_iter()
                .map(|b| b.join().unwrap_or_else(|_| Err(ServiceError::Internal("a build panicked".into()))))
                .collect()
        });
        if let [only] = results.as_slice() {
            return only.clone().map(|record| ResolvedTag { manifests: record.manifests });
        }

        let mut built = Vec::new();
        let mut first_error = None;
        for (system, result) in systems.iter().zip(results) {
            match result {
                Ok(record) => built.push(record),
                // The flake need not offer every package for every system.
                Err(ServiceError::NameUnknown(message)) => {
                    log::debug!("{name}:{tag} is left out for {system}: {message}");
                    first_error.get_or_insert(ServiceError::NameUnknown(message));
                }
                Err(err) => {
                    log::warn!("{name}:{tag} is left out of its index for {system}: {err}");
                    // A real failure says more than another system's missing attribute.
                    if !matches!(first_error, Some(ServiceError::Build { .. } | ServiceError::Internal(_))) {
                        first_error = Some(err);
                    }
                }
            }
        }
        if built.is_empty() {
            return Err(first_error.expect("several systems, none built"));
        }
        let manifests = [ManifestFormat::Oci, ManifestFormat::Docker]
            .into_iter()
            .map(|format| {
                let entries: Vec<_> = built
                    .iter()
                    .filter_map(|image| Some((image.platform.clone(), self.meta.manifest(&image.manifests[&format])?)))
                    .collect();
                (format, self.meta.put_manifest(&manifest::index_json(format, &entries)))
            })
            .collect::<BTreeMap<_, _>>();
        Ok(ResolvedTag { manifests })
    }

    /// Builds and stores the image of `name:tag` for one system.
    fn build_image(&self, name: &RepoName, tag: &Tag, system: &str) -> Result<ImageRecord, ServiceError> {
        let _slot = self.slots.acquire().ok_or(ServiceError::TooManyBuilds)?;
        let started = Instant::now();
        let image = format!("{}:{tag} for {system}", name.canonical());
        let result = plan::plan_image(&self.config, &self.nix, name, tag, system).and_then(|plan| self.assemble(&plan));
        match &result {
            Ok(record) => log::info!(
                "image {image} ready in {:.1?}: {} layers, {}",
                started.elapsed(),
                record.layers.len(),
                record.manifests[&ManifestFormat::Oci]
            ),
            Err(err) => log::warn!("image {image} failed after {:.1?}: {err}", started.elapsed()),
        }
        result
    }
}

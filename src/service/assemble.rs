//! From an image plan to stored blobs: layers generated in parallel (one
//! worker per core), each written once and reused by recipe afterwards;
//! then the config and both manifest forms, recorded under the plan's key.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::plan::ImagePlan;
use super::{Service, ServiceError};
use crate::cache::{GcRoot, ImageRecord};
use crate::digest::Digest;
use crate::image::layer::{self, LayerRecord, LayerSource};
use crate::image::{manifest, InvalidImage};
use crate::media_type::ManifestFormat;
use crate::metrics;

impl Service {
    /// The stored image for `plan`, generating what is not stored yet.
    pub(super) fn assemble(&self, plan: &ImagePlan) -> Result<ImageRecord, ServiceError> {
        let key = plan.key(&self.config);
        if let Some(stored) = self.meta.image(&key) {
            if self.restore(&stored) {
                let record = ImageRecord { gcroots: gcroots(plan), ..stored.clone() };
                // Nothing is written when nothing changed (a read-only state directory).
                if record != stored {
                    self.meta.put_image(&key, &record);
                }
                return Ok(record);
            }
        }
        let layers = self.generate_layers(&plan.layers)?;
        let config = manifest::config_json(&plan.config, &layers);
        self.meta.put_config(&config);
        let manifests = [ManifestFormat::Oci, ManifestFormat::Docker]
            .into_iter()
            .map(|format| {
                let manifest = manifest::manifest_json(format, &config, &layers, &plan.annotations);
                (format, self.meta.put_manifest(&manifest))
            })
            .collect::<BTreeMap<_, _>>();
        let record = ImageRecord {
            platform: plan.config.platform.clone(),
            manifests,
            layers: layers.iter().map(|l| l.digest.clone()).collect(),
            gcroots: gcroots(plan),
            annotations: plan.annotations.clone(),
            // JSON, so UTF-8; were it not, restoring from this record would
            // find the digests differ and build the image again.
            config: String::from_utf8_lossy(&config).into_owned(),
            layer_records: layers,
        };
        self.meta.put_image(&key, &record);
        Ok(record)
    }

    pub(super) fn source_key(&self, source: &LayerSource) -> Digest {
        let identity = serde_json::json!({ "version": 1, "source": source, "compression": self.config.compression });
        Digest::of(&serde_json::to_vec(&identity).expect("sources serialize"))
    }

    /// Generates the layers not generated before, on all cores.
    fn generate_layers(&self, sources: &[LayerSource]) -> Result<Vec<LayerRecord>, ServiceError> {
        let results: Vec<Mutex<Option<io::Result<LayerRecord>>>> = sources.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(sources.len()).max(1);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(source) = sources.get(i) else { break };
                    *results[i].lock().unwrap() = Some(self.layer(source));
                });
            }
        });
        results
            .into_iter()
            .map(|slot| slot.into_inner().unwrap().expect("every layer was handled"))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| match InvalidImage::from_io(&e) {
                Some(invalid) => invalid.clone().into(),
                None => ServiceError::internal("generating a layer", e),
            })
    }

    /// One layer: reused when its recipe was generated before and the blob
    /// is cached or can be made again; otherwise generated into the cache.
    fn layer(&self, source: &LayerSource) -> io::Result<LayerRecord> {
        let key = self.source_key(source);
        if let Some(record) = self.meta.layer_by_source(&key) {
            if self.blobs.contains(&record.digest) || source.is_available() {
                return Ok(record);
            }
        }
        let started = std::time::Instant::now();
        let (record, writer) = layer::generate(source, self.config.compression, self.blobs.writer())?;
        self.meta.put_layer(&key, &record);
        let evicted = self.blobs.commit(writer, &record.digest, record.size);
        metrics::global().layers.generated("new", record.size, started.elapsed());
        log::info!(
            "generated layer {} ({} bytes) in {:.1?}: {}",
            record.digest,
            record.size,
            started.elapsed(),
            record.source.describe()
        );
        self.after_eviction(&evicted);
        Ok(record)
    }
}

fn gcroots(plan: &ImagePlan) -> Vec<GcRoot> {
    plan.gcroots
        .iter()
        .filter_map(|link| Some(GcRoot { target: std::fs::read_link(link).ok()?, link: link.clone() }))
        .collect()
}

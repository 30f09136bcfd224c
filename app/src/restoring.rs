//! Opening a snapshot and restoring it: what `restore`, `drill` and the
//! oplog export share. A snapshot is found on the sinks a [`Reading`]
//! names, its signature judged by the trusted signers before anything is
//! fetched (an [`AdmittedIndex`] is what a restore takes), and restored
//! with the config's sources where it declares them.

use std::path::Path;
use std::sync::Arc;

use coffer_core::ops::RestoreRequest;
use coffer_core::slices::{LogPos, pitr};
use coffer_core::{
    Progress, RestoreOptions, RestoreOutcome, Result, Sink, keys::AdmittedIndex, keys::Identities,
    keys::TrustedSigners, ops::CatalogEntry,
};

use crate::App;
use crate::config::Config;

pub use coffer_core::ops::{find_job_snapshot, find_snapshot};

/// Where and how to read snapshots: the config, the sinks, the trusted
/// signers (see [`App::reading`]).
pub struct Reading {
    /// The config, if there is one.
    pub config: Option<Config>,
    /// The sinks to look on, in order.
    pub sinks: Vec<(String, Arc<dyn Sink>)>,
    /// Whom to trust.
    pub trust: TrustedSigners,
}

/// A snapshot to decrypt: found on a sink, its signature judged, with the
/// keys to open it.
pub struct Opened {
    /// The config, if there is one.
    pub config: Option<Config>,
    /// The sink it was found on.
    pub sink_name: String,
    /// That sink.
    pub sink: Arc<dyn Sink>,
    /// Its catalog entry.
    pub entry: CatalogEntry,
    /// The keys that open it.
    pub ids: Identities,
    /// The index, its signature judged: what a restore takes.
    pub admitted: AdmittedIndex,
}

/// A point-in-time restore: the base snapshot opened, and every archived
/// oplog slice up to the target fetched, its signature judged, its SHA-256
/// checked and decrypted, before anything is restored.
pub struct OpenedAt {
    /// The base snapshot.
    pub opened: Opened,
    /// The slices to replay after it.
    pub replays: Vec<pitr::LogReplay>,
    /// Where the replay stops (included).
    pub target: LogPos,
}

/// What a restore of an opened snapshot restores.
pub struct RestoreOf<'a> {
    /// Only these sources (names or kinds; all when empty).
    pub only: &'a [String],
    /// Where the verified ciphertext is cached (default: a temp dir).
    pub cache_dir: Option<&'a Path>,
    /// Target, dry run, plugin options.
    pub options: RestoreOptions,
    /// Places only the bundle's origin names are accepted (see
    /// [`RestoreRequest::origin_places`]).
    pub origin_places: bool,
}

impl App {
    /// The config, the sinks `sinks` names (else the config's) and the
    /// trusted signers (`trusted` plus the config's).
    pub fn reading(&self, sinks: &[String], trusted: &[String]) -> Result<Reading> {
        let config = self.config()?;
        let sinks = self.read_sinks(sinks, config.as_ref())?;
        let trust = crate::trust::trusted_signers(trusted, config.as_ref())?;
        Ok(Reading { config, sinks, trust })
    }

    /// The snapshot `spec` (an id, a unique prefix or `latest`, of `job`
    /// when given) on the first of `reading`'s sinks holding it, its
    /// signature judged before anything is fetched.
    pub async fn open_snapshot(
        &self,
        reading: Reading,
        ids: Identities,
        spec: &str,
        job: Option<&str>,
    ) -> Result<Opened> {
        let Reading { config, sinks, trust } = reading;
        let (sink_name, sink, entry) = find_job_snapshot(&sinks, spec, job).await?;
        // Before fetching or decrypting anything: a forged snapshot stops here.
        let admitted = trust.admit(&entry)?;
        Ok(Opened {
            config,
            sink_name,
            sink,
            entry,
            ids,
            admitted,
        })
    }

    /// The newest snapshot of `job` at or before `target` and the oplog
    /// slices after it up to `target`, from the first of `reading`'s sinks
    /// that holds a complete chain.
    pub async fn open_point_in_time(
        &self,
        reading: Reading,
        ids: Identities,
        job: &str,
        target: LogPos,
    ) -> Result<OpenedAt> {
        let Reading { config, sinks, trust } = reading;
        let mut first_err = None;
        for (sink_name, sink) in sinks {
            let catalog = coffer_core::ops::Catalog::load(sink.as_ref()).await?;
            let plan = match pitr::plan(sink.as_ref(), &catalog, &trust, job, target).await {
                Ok(p) => p,
                Err(e) => {
                    first_err.get_or_insert(e.with_context("sink", &sink_name));
                    continue;
                }
            };
            // Every slice checked before anything is restored.
            let replays = pitr::fetch(sink.as_ref(), &plan, &ids).await?;
            let entry = catalog
                .snapshots
                .iter()
                .find(|e| e.index.id == plan.base.index().id)
                .cloned()
                .expect("the plan's base is in the catalog");
            return Ok(OpenedAt {
                opened: Opened {
                    config,
                    sink_name,
                    sink,
                    entry,
                    ids,
                    admitted: plan.base,
                },
                replays,
                target,
            });
        }
        Err(first_err.unwrap_or_else(|| coffer_core::config_error("no sink given")))
    }

    /// Restores `opened` ([`coffer_core::ops::restore`]): each source
    /// rebuilt from the config when it declares one of that name and kind,
    /// else from the bundle's origin; phases on `progress`; stopped by
    /// [`App::cancel`]. The keys go to the restore: `opened.ids` is empty
    /// after.
    pub async fn restore(
        &self,
        opened: &mut Opened,
        what: RestoreOf<'_>,
        progress: Arc<Progress>,
    ) -> Result<RestoreOutcome> {
        let mut options = what.options;
        options.cancel = self.cancel.clone();
        let req = RestoreRequest {
            index: opened.admitted.clone(),
            identities: std::mem::take(&mut opened.ids),
            only: what.only.to_vec(),
            configured: opened
                .config
                .as_ref()
                .map(|c| c.sources.clone())
                .unwrap_or_default(),
            registry: self.registry.clone(),
            cache_dir: what.cache_dir.map(Path::to_path_buf),
            options,
            origin_places: what.origin_places,
        };
        coffer_core::ops::restore(opened.sink.as_ref(), req, progress).await
    }
}

//! [`App`]: what every operation of this layer gets from its front end.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_core::chunked::SnapshotFormat;
use coffer_core::{CancelFlag, Registry, Result, Sink, config_error};

use crate::config::Config;
use crate::record::Recorder;

/// The context of a run: where the config is, the plugins, the interrupt
/// flag, the observer that gets the run's notes and metrics. A front end
/// makes one per run (the CLI's context wraps it).
pub struct App {
    /// `--config`/`COFFER_CONFIG`: the config file, which must exist; else
    /// `./coffer.toml` when present.
    pub config_path: Option<PathBuf>,
    /// The plugins.
    pub registry: Registry,
    /// Set when the user interrupts; long operations check it and stop.
    pub cancel: CancelFlag,
    /// Sinks written to are made where there is none (`--create-sink`).
    pub create_sinks: bool,
    /// What the run did, for the audit log and the metrics.
    pub record: Recorder,
}

impl App {
    /// The config: [`App::config_path`] (must exist), else ./coffer.toml if
    /// present.
    pub fn config(&self) -> Result<Option<Config>> {
        match &self.config_path {
            Some(p) => Config::load(p, &self.registry).map(Some),
            None => {
                let p = Path::new("coffer.toml");
                if p.exists() {
                    Config::load(p, &self.registry).map(Some)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// The sinks `names` (config names, directories or URLs), else the
    /// config's.
    pub fn read_sinks(
        &self,
        names: &[String],
        config: Option<&Config>,
    ) -> Result<Vec<(String, Arc<dyn Sink>)>> {
        if !names.is_empty() {
            return names
                .iter()
                .map(|s| Ok((s.clone(), self.sink(s, config)?)))
                .collect();
        }
        match config {
            Some(c) if !c.sinks.is_empty() => {
                Ok(c.sinks.iter().map(|(n, s)| (n.clone(), s.clone())).collect())
            }
            _ => Err(config_error("no sink given")
                .with_hint("pass --sink DIR_OR_URL (or a sink name from coffer.toml)")),
        }
    }

    /// The sink `s`: a name from the config, else a directory or URL.
    pub fn sink(&self, s: &str, config: Option<&Config>) -> Result<Arc<dyn Sink>> {
        if let Some(c) = config
            && let Some(sink) = c.sinks.get(s)
        {
            return Ok(sink.clone());
        }
        self.registry.sink_from_url(s)
    }

    /// A sink the run writes to: as [`App::sink`]; with
    /// [`App::create_sinks`] made a sink on its first use.
    pub fn target_sink(&self, s: &str, config: Option<&Config>) -> Result<Arc<dyn Sink>> {
        let sink = self.sink(s, config)?;
        Ok(if self.create_sinks {
            crate::create_sink::CreateOnFirstUse::wrap(sink)
        } else {
            sink
        })
    }

    /// The sinks a backup writes: `(name, required)` resolved as
    /// [`App::target_sink`].
    /// Each stores snapshots as `format` when given, else as its
    /// `[sink.NAME] format` says (bundle by default).
    pub fn sink_targets(
        &self,
        targets: &[(String, bool)],
        config: Option<&Config>,
        format: Option<SnapshotFormat>,
    ) -> Result<Vec<coffer_core::ops::SinkTarget>> {
        targets
            .iter()
            .map(|(name, required)| {
                let configured = config.and_then(|c| c.sink_format.get(name)).copied();
                Ok(coffer_core::ops::SinkTarget {
                    name: name.clone(),
                    sink: self.target_sink(name, config)?,
                    required: *required,
                    format: format.or(configured).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// The dedup key of a backup's chunked sinks (`None` without one):
    /// `flag` (`--dedup-key`), else their `dedup-key` (one file for all),
    /// else [`coffer_core::chunked::default_dedup_key_path`]; see
    /// [`coffer_core::chunked::dedup_key_for`].
    pub async fn dedup_key(
        &self,
        sinks: &[coffer_core::ops::SinkTarget],
        config: Option<&Config>,
        flag: Option<&Path>,
        encryption: &coffer_core::keys::Encryption,
    ) -> Result<Option<Arc<coffer_core::chunked::DedupKey>>> {
        let chunked: Vec<(String, Arc<dyn Sink>)> = sinks
            .iter()
            .filter(|t| t.format == SnapshotFormat::Chunked)
            .map(|t| (t.name.clone(), t.sink.clone()))
            .collect();
        if chunked.is_empty() {
            return Ok(None);
        }
        let configured: std::collections::BTreeSet<&PathBuf> = chunked
            .iter()
            .filter_map(|(n, _)| config.and_then(|c| c.sink_dedup_key.get(n)))
            .collect();
        let path = match (flag, configured.len()) {
            (Some(p), _) => p.to_path_buf(),
            (None, 0) => coffer_core::chunked::default_dedup_key_path(),
            (None, 1) => configured.into_iter().next().expect("one").clone(),
            (None, _) => {
                return Err(config_error(
                    "the chunked sinks of this run name different dedup-key files; one run chunks with one key",
                )
                .with_hint("give them the same dedup-key, or pass --dedup-key FILE"));
            }
        };
        coffer_core::chunked::dedup_key_for(&chunked, &path, encryption)
            .await
            .map(|k| Some(Arc::new(k)))
    }
}

//! What every command shares: the global context ([`Ctx`]), the flag groups
//! several commands flatten ([`SinkSel`], [`KeySel`], [`TrustSel`],
//! [`BackupSinks`]) and their resolvers (keys, trust, snapshots, locks).
//! Depends on config, output and core only; never on a command.

mod job;
mod keys;
mod locks;
mod snapshots;
mod trust;

use coffer_core::chunked::SnapshotFormat;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use coffer_core::{CancelFlag, Registry, Result, Sink, config_error};

use crate::Failure;
use crate::config::Config;

pub(crate) use job::*;
pub(crate) use keys::*;
pub(crate) use locks::*;
pub(crate) use snapshots::*;
pub(crate) use trust::*;

pub(crate) type CmdResult = std::result::Result<(), Failure>;

/// `--time T`: the snapshot time to record instead of now.
pub(crate) fn snapshot_time(time: Option<&str>) -> Result<Option<jiff::Timestamp>> {
    time.map(|t| {
        t.parse::<jiff::Timestamp>().map_err(|e| {
            config_error(format!("--time `{t}` is not an RFC 3339 time: {e}"))
                .with_hint("e.g. 2026-11-27T22:15:00Z")
        })
    })
    .transpose()
}

/// What every command gets: global flags, the plugin registry, the
/// interrupt flag. Commands added in their own modules use it too.
pub(crate) struct Ctx {
    pub(crate) json: bool,
    pub(crate) quiet: bool,
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) registry: Registry,
    pub(crate) cancel: CancelFlag,
    pub(crate) verbose: bool,
    /// `--create-sink`: sinks written to are made where there is none.
    pub(crate) create_sinks: bool,
    /// What the command did, for the audit log and the metrics.
    pub(crate) record: crate::record::Record,
}

impl Ctx {
    /// The config: --config/COFFER_CONFIG (must exist), else ./coffer.toml if present.
    pub(crate) fn config(&self) -> Result<Option<Config>> {
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

    /// Sinks named or given by URL on the command line, else the config's.
    pub(crate) fn read_sinks(
        &self,
        sel: &SinkSel,
        config: Option<&Config>,
    ) -> Result<Vec<(String, Arc<dyn Sink>)>> {
        if !sel.sinks.is_empty() {
            return sel
                .sinks
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

    pub(crate) fn sink(&self, s: &str, config: Option<&Config>) -> Result<Arc<dyn Sink>> {
        if let Some(c) = config
            && let Some(sink) = c.sinks.get(s)
        {
            return Ok(sink.clone());
        }
        self.registry.sink_from_url(s)
    }

    /// A sink the command writes to: as [`Ctx::sink`]; with
    /// `--create-sink` made a sink on its first use.
    pub(crate) fn target_sink(&self, s: &str, config: Option<&Config>) -> Result<Arc<dyn Sink>> {
        let sink = self.sink(s, config)?;
        Ok(if self.create_sinks {
            crate::create_sink::CreateOnFirstUse::wrap(sink)
        } else {
            sink
        })
    }

    /// The sinks a backup writes: `(name, required)` resolved as
    /// [`Ctx::target_sink`].
    /// Each stores snapshots as `format` when given, else as its
    /// `[sink.NAME] format` says (bundle by default).
    pub(crate) fn sink_targets(
        &self,
        targets: &[(String, bool)],
        config: Option<&Config>,
        format: Option<SnapshotFormat>,
    ) -> Result<Vec<coffer_core::SinkTarget>> {
        targets
            .iter()
            .map(|(name, required)| {
                let configured = config.and_then(|c| c.sink_format.get(name)).copied();
                Ok(coffer_core::SinkTarget {
                    name: name.clone(),
                    sink: self.target_sink(name, config)?,
                    required: *required,
                    format: format.or(configured).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// The dedup key of a backup's chunked sinks (`None` without one):
    /// `--dedup-key`, else their `dedup-key` (one file for all), else
    /// [`coffer_core::chunked::default_dedup_key_path`]; see
    /// [`coffer_core::chunked::dedup_key_for`].
    pub(crate) async fn dedup_key(
        &self,
        sinks: &[coffer_core::SinkTarget],
        config: Option<&Config>,
        flag: Option<&std::path::Path>,
        encryption: &coffer_core::Encryption,
    ) -> Result<Option<Arc<coffer_core::chunked::DedupKey>>> {
        let chunked: Vec<(String, Arc<dyn Sink>)> = sinks
            .iter()
            .filter(|t| t.format == SnapshotFormat::Chunked)
            .map(|t| (t.name.clone(), t.sink.clone()))
            .collect();
        if chunked.is_empty() {
            return Ok(None);
        }
        let configured: std::collections::BTreeSet<&std::path::PathBuf> = chunked
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

#[derive(Debug, Args, Default)]
pub struct SinkSel {
    /// A sink to read: a name from the config, a directory, or a URL
    /// (file:///…, s3://…); repeatable (the first one holding the snapshot
    /// is used). Default: the config's sinks.
    #[arg(long = "sink", value_name = "SINK")]
    pub sinks: Vec<String>,
}

/// What a command that reads snapshots takes: where (`--sink`), with
/// which keys (`--identity`, `--passphrase`) and whom to trust
/// (`--trusted-signer`).
#[derive(Debug, Args, Default)]
pub struct ReadSel {
    #[command(flatten)]
    pub sink: SinkSel,
    #[command(flatten)]
    pub keys: KeySel,
    #[command(flatten)]
    pub trust: TrustSel,
}

/// [`ReadSel`] resolved: the config, the sinks to read, the trusted
/// signers.
pub(crate) struct Reading {
    pub(crate) config: Option<crate::config::Config>,
    pub(crate) sinks: Vec<(String, std::sync::Arc<dyn coffer_core::Sink>)>,
    pub(crate) trust: coffer_core::TrustedSigners,
}

impl Ctx {
    /// Loads the config and resolves `sel`'s sinks and trusted signers.
    pub(crate) fn reading(&self, sel: &ReadSel) -> Result<Reading> {
        let config = self.config()?;
        let sinks = self.read_sinks(&sel.sink, config.as_ref())?;
        let trust = trusted_signers(&sel.trust, config.as_ref())?;
        Ok(Reading { config, sinks, trust })
    }
}

#[derive(Debug, Args, Default)]
pub struct BackupSinks {
    /// A sink to write: a name from the config, a directory, or a URL
    /// (file:///…, s3://…); repeat to fan out to several. Default: the
    /// job's sinks.
    #[arg(long = "sink", value_name = "SINK")]
    pub sinks: Vec<String>,
}

#[derive(Debug, Args, Default)]
pub struct KeySel {
    /// Identity file to decrypt with (age identity or SSH private key);
    /// repeatable. Env COFFER_IDENTITY.
    #[arg(
        long = "identity",
        short = 'i',
        value_name = "FILE",
        env = "COFFER_IDENTITY",
        hide_env_values = true
    )]
    pub identities: Vec<PathBuf>,
    /// Use a passphrase (from COFFER_PASSPHRASE, --passphrase-file, or a
    /// prompt on a terminal).
    #[arg(long)]
    pub passphrase: bool,
    /// Read the passphrase from FILE.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub struct TrustSel {
    /// Trust snapshots signed by this key (coffer-sign-ed25519:…, ssh-ed25519 …,
    /// or a file of such lines); repeatable; adds to `trusted-signers`. Once
    /// any is given, unsigned and untrusted snapshots are refused.
    #[arg(long = "trusted-signer", value_name = "KEY")]
    pub trusted_signers: Vec<String>,
}

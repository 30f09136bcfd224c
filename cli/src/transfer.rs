//! Moving snapshots between sinks for copy, export and import: selecting
//! them, running a batch, printing each result.

use std::sync::Arc;

use coffer_core::ops::TransferReport;
use coffer_core::{
    ErrorKind, Result, Sink, keys::TrustedSigners, ops::CatalogEntry, ops::CopyOptions, ops::CopyOutcome,
    ops::CopyStatus,
};

use crate::Failure;
use crate::config::Config;
use crate::ctx::{CmdResult, Ctx, TrustSel};
use crate::output::size;

/// Which snapshots of which sink `copy` and `export` take, and whose
/// signatures they must carry.
#[derive(Debug, clap::Args)]
pub struct Pick {
    /// Snapshot ids or unique prefixes (or `latest`).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// The newest snapshot.
    #[arg(long, conflicts_with_all = ["snapshots", "all"])]
    pub latest: bool,
    /// Every snapshot of the sink read.
    #[arg(long, conflicts_with = "snapshots")]
    pub all: bool,
    /// The sink to read: a name from the config, a directory or a URL.
    #[arg(long, value_name = "SINK")]
    pub from: String,
    /// Whose signatures the snapshots read must carry.
    #[command(flatten)]
    pub trust: TrustSel,
}

/// The sink a [`Pick`] reads, with the config and the signers it trusts.
pub(crate) struct Reading {
    pub(crate) config: Option<Config>,
    pub(crate) trust: TrustedSigners,
    pub(crate) from: Arc<dyn Sink>,
}

impl Pick {
    /// Loads the config, the trusted signers and the `--from` sink.
    pub(crate) fn open(&self, ctx: &Ctx) -> Result<Reading> {
        let config = ctx.config()?;
        let trust = crate::ctx::trusted_signers(&self.trust, config.as_ref())?;
        let from = ctx.sink(&self.from, config.as_ref())?;
        Ok(Reading { config, trust, from })
    }

    /// The picked snapshots of `from` (the sink `--from` names), oldest
    /// first; none named means the newest.
    pub(crate) async fn entries(&self, from: &dyn Sink) -> Result<Vec<CatalogEntry>> {
        coffer_core::ops::Catalog::load(from)
            .await
            .map_err(|e| e.prefix(format!("--from {}", self.from)))?
            .select(&self.snapshots, self.latest, self.all)
    }
}

/// Result of a batch, for output and the exit code.
pub(crate) struct Batch {
    pub(crate) results: Vec<(CatalogEntry, Result<CopyOutcome>)>,
}

impl Batch {
    pub(crate) fn ok_ids(&self) -> Vec<String> {
        self.results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(e, _)| e.index.id.to_string())
            .collect()
    }

    pub(crate) fn refused(&self) -> Vec<(String, String)> {
        self.results
            .iter()
            .filter_map(|(e, r)| match r {
                Err(err) if err.kind() == ErrorKind::Integrity => {
                    Some((e.index.id.to_string(), err.to_string()))
                }
                _ => None,
            })
            .collect()
    }

    /// The `--json` report of the batch, `from` → `to`.
    pub(crate) fn report(&self, from: &dyn Sink, to: &dyn Sink) -> TransferReport {
        TransferReport::new(from, to, &self.results)
    }

    /// Exit code: 3 if any snapshot failed an integrity check, else the
    /// first other error.
    pub(crate) fn finish(self, what: &str) -> CmdResult {
        let refused = self.refused();
        if !refused.is_empty() {
            return Err(Failure::Integrity(format!(
                "{} snapshot(s) refused ({what}): {}",
                refused.len(),
                refused
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        for (_, r) in self.results {
            if let Err(e) = r {
                return Err(e.into());
            }
        }
        Ok(())
    }
}

pub(crate) fn print_one(quiet_json: bool, verb: &str, e: &CatalogEntry, r: &Result<CopyOutcome>) {
    if quiet_json {
        return;
    }
    match r {
        Ok(o) if o.status == CopyStatus::Skipped => {
            println!("{} skipped (already present and identical)", e.index.id)
        }
        Ok(o) if o.reused_object => println!(
            "{} {verb} (completed an interrupted copy; {} object verified)",
            e.index.id,
            size(o.index.object.size)
        ),
        Ok(o) => println!(
            "{} {verb} ({}, SHA-256 verified)",
            e.index.id,
            size(o.index.object.size)
        ),
        Err(err) => {
            println!("{} REFUSED: {err}", e.index.id);
            if let Some(h) = err.hint() {
                println!("  hint: {h}");
            }
        }
    }
}

/// Copies `entries` from `from` to `to` (`copied`, `exported` or
/// `imported`: the verb of each line; the lock holder and progress label
/// are its command), chunked snapshots as bundles with `bundle`.
pub(crate) async fn run_batch(
    ctx: &Ctx,
    from: Arc<dyn Sink>,
    to: Arc<dyn Sink>,
    entries: Vec<CatalogEntry>,
    trust: TrustedSigners,
    verb: &'static str,
    bundle: Option<coffer_core::ops::Rebundle>,
) -> Result<Batch> {
    // One bar for the batch: the bytes of every object to copy.
    let label = match verb {
        "copied" => "copy",
        "exported" => "export",
        "imported" => "import",
        other => other,
    };
    let progress = Arc::new(coffer_core::Progress::default());
    progress.begin(label, Some(entries.iter().map(|e| e.index.object.size).sum()));
    let mut opts = CopyOptions::new()
        .with_trusted(trust)
        .with_progress(progress.clone());
    if let Some(how) = bundle {
        opts = opts.with_bundle(how);
    }
    let json = ctx.json;
    let shown = crate::output::Spinner::start(label, progress, ctx.quiet);
    let results = coffer_core::ops::copy_snapshots(from, to, &entries, &opts, label, &mut |e, r| {
        print_one(json, verb, e, r)
    })
    .await;
    shown.finish();
    let results = results?;
    Ok(Batch {
        results: entries.into_iter().zip(results).collect(),
    })
}

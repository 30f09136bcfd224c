//! `coffer copy`: snapshots between sinks without a key, SHA-256 checked.

use clap::Args;
use coffer_core::Catalog;

use crate::ctx::{CmdResult, Ctx, TrustSel};
use crate::output::print_json;
use crate::transfer::run_batch;

/// `coffer copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Snapshot ids or unique prefixes (or `latest`).
    #[arg(value_name = "SNAPSHOT", required_unless_present_any = ["latest", "all"])]
    pub snapshots: Vec<String>,
    /// Copy the newest snapshot.
    #[arg(long, conflicts_with_all = ["snapshots", "all"])]
    pub latest: bool,
    /// Copy every snapshot of the source.
    #[arg(long, conflicts_with = "snapshots")]
    pub all: bool,
    /// The sink to read: a name from the config, a directory or a URL.
    #[arg(long, value_name = "SINK")]
    pub from: String,
    /// The sink to write.
    #[arg(long, value_name = "SINK")]
    pub to: String,
    #[command(flatten)]
    pub trust: TrustSel,
}

/// `coffer copy`.
pub(crate) async fn exec(ctx: &Ctx, a: CopyArgs) -> CmdResult {
    let config = ctx.config()?;
    let trust = crate::ctx::trusted_signers(&a.trust, config.as_ref())?;
    let from = ctx.sink(&a.from, config.as_ref())?;
    let to = ctx.target_sink(&a.to, config.as_ref())?;
    let cat = Catalog::load(from.as_ref())
        .await
        .map_err(|e| e.prefix(format!("--from {}", a.from)))?;
    let entries = cat.select(&a.snapshots, a.latest, a.all)?;
    let batch = run_batch(ctx, from.clone(), to.clone(), entries, trust, "copy", "copied").await?;
    if ctx.json {
        print_json(&batch.report(from.as_ref(), to.as_ref()));
    }
    batch.finish("copy")
}

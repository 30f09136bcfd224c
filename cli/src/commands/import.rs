//! `coffer import`: a medium's snapshots into a sink after checking each.

use clap::Args;
use coffer_core::ops::{ErrorInfo, TransferItem};
use coffer_core::{ErrorKind, ops::CopyStatus};

use crate::Failure;
use crate::ctx::{CmdResult, Ctx, TrustSel};
use crate::output::print_json;
use crate::transfer::run_batch;

/// `coffer import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Only these snapshots (default: every one on the medium).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// The medium: media:PATH or a media sink's name.
    #[arg(long, value_name = "MEDIA")]
    pub from: String,
    /// The sink to merge into.
    #[arg(long, value_name = "SINK")]
    pub to: String,
    #[command(flatten)]
    pub trust: TrustSel,
}

/// `coffer import`.
pub(crate) async fn exec(ctx: &Ctx, a: ImportArgs) -> CmdResult {
    let config = ctx.config()?;
    let trust = crate::ctx::trusted_signers(&a.trust, config.as_ref())?;
    let from = ctx.sink(&a.from, config.as_ref())?;
    let to = ctx.target_sink(&a.to, config.as_ref())?;
    let (entries, unreadable) = coffer_app::media::importable(from.as_ref(), &a.snapshots)
        .await
        .map_err(|e| e.prefix(format!("--from {}", a.from)))?;
    if !ctx.json {
        for (key, err) in &unreadable {
            println!("{key} REFUSED: unreadable index: {err}");
        }
    }
    let batch = run_batch(ctx, from.clone(), to.clone(), entries, trust, "imported", None).await?;

    // Record the receipt on the medium; a write-protected medium only warns.
    let mut refused: Vec<String> = batch.refused().into_iter().map(|(id, _)| id).collect();
    refused.extend(unreadable.iter().map(|(k, _)| k.clone()));
    let logged =
        coffer_app::media::log_import(from.as_ref(), to.as_ref(), batch.ok_ids(), refused.clone()).await;
    if let Err(e) = &logged {
        eprintln!("warning: could not append to the medium's custody.log: {e}");
    }
    if ctx.json {
        let mut report = batch.report(from.as_ref(), to.as_ref());
        for (k, e) in &unreadable {
            let error = ErrorInfo {
                kind: ErrorKind::Integrity.as_str().to_string(),
                message: format!("unreadable index: {e}"),
                hint: None,
            };
            report.snapshots.push(TransferItem::failed(k, error));
        }
        report.custody_logged = Some(logged.is_ok());
        print_json(&report);
    } else {
        let imported = batch
            .results
            .iter()
            .filter(|(_, r)| r.as_ref().is_ok_and(|o| o.status == CopyStatus::Copied))
            .count();
        let skipped = batch
            .results
            .iter()
            .filter(|(_, r)| r.as_ref().is_ok_and(|o| o.status == CopyStatus::Skipped))
            .count();
        println!(
            "imported {imported}, skipped {skipped} already present, refused {}",
            refused.len()
        );
    }
    if !unreadable.is_empty() && batch.refused().is_empty() {
        return Err(Failure::Integrity(format!(
            "{} snapshot index(es) on the medium are unreadable",
            unreadable.len()
        )));
    }
    batch.finish("import")
}

//! `coffer import`: a medium's snapshots into a sink after checking each.

use clap::Args;
use coffer_core::ops::{ErrorInfo, TransferItem};
use coffer_core::{Catalog, CopyStatus, Error, ErrorKind, Sink};
use coffer_sink_media::kit;
use coffer_sink_media::kit::CustodyRecord;

use crate::Failure;
use crate::ctx::{CmdResult, Ctx, TrustSel};
use crate::output::print_json;
use crate::transfer::{medium_of, run_batch};

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
    let medium = medium_of(from.as_ref());
    let cat = Catalog::load(from.as_ref())
        .await
        .map_err(|e| e.prefix(format!("--from {}", a.from)))?;
    let mut unreadable: Vec<(String, String)> = Vec::new();
    for (key, err) in &cat.unreadable {
        if !ctx.json {
            println!("{key} REFUSED: unreadable index: {err}");
        }
        unreadable.push((key.clone(), err.clone()));
    }
    if cat.snapshots.is_empty() && unreadable.is_empty() {
        return Err(
            Error::new(ErrorKind::NotFound, format!("{} holds no snapshot", a.from))
                .with_hint("check that the right medium is mounted (`coffer media status PATH`)")
                .into(),
        );
    }
    let entries = if a.snapshots.is_empty() {
        cat.snapshots.clone()
    } else {
        cat.select(&a.snapshots, false, false)?
    };
    let batch = run_batch(
        ctx,
        from.clone(),
        to.clone(),
        entries,
        trust,
        "import",
        "imported",
    )
    .await?;

    // Record the receipt on the medium; a write-protected medium only warns.
    let mut refused: Vec<String> = batch.refused().into_iter().map(|(id, _)| id).collect();
    refused.extend(unreadable.iter().map(|(k, _)| k.clone()));
    let mut record = CustodyRecord::new(
        "import",
        batch.ok_ids(),
        from.info().to_string(),
        to.info().to_string(),
        medium.as_ref().and_then(|(_, id)| id.as_ref()),
    );
    record.refused = refused.clone();
    let logged = async {
        kit::append_custody(from.as_ref(), &record).await?;
        kit::update_sums(from.as_ref(), &[kit::CUSTODY_FILE]).await
    }
    .await;
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

//! `coffer show`: one snapshot's index (and manifest with a key).

use std::sync::Arc;

use clap::Args;
use coffer_core::Progress;

use crate::ctx::{CmdResult, Ctx, ReadSel, Reading, identities};
use crate::output::{Spinner, print_json, size};

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    #[command(flatten)]
    pub read: ReadSel,
}

pub(crate) async fn exec(ctx: &Ctx, a: ShowArgs) -> CmdResult {
    let Reading { sinks, trust, .. } = ctx.read(&a.read)?;
    let ids = identities(&a.read.keys)?;
    let ids = (!ids.is_empty()).then(|| Arc::new(ids));
    let progress = Arc::new(Progress::default());
    let shown = Spinner::start("show", progress.clone(), ctx.quiet);
    let done = coffer_core::ops::show(&sinks, &a.snapshot, &trust, ids, &ctx.registry, progress).await;
    shown.finish();
    let (outcome, sink, manifest) = done?;
    if ctx.json {
        print_json(&outcome);
        return Ok(());
    }
    let (sink_name, entry_state) = (&outcome.sink, &outcome.state);
    let i = &outcome.index;
    println!("snapshot   {}", i.id);
    println!("sink       {sink_name} ({})", sink.info());
    println!("state      {entry_state}");
    match &outcome.signer {
        Some(fp) => println!("signature  {} ({fp})", outcome.signature),
        None => println!("signature  {}", outcome.signature),
    }
    println!("job        {}", i.job);
    println!("created    {}", i.created_at);
    println!("host       {}", i.host);
    if !i.tags.is_empty() {
        println!("tags       {}", i.tags.join(", "));
    }
    println!(
        "object     {} ({}, sha256 {})",
        i.object.key,
        size(i.object.size),
        i.object.sha256
    );
    println!("compressed {}", i.compression);
    println!(
        "encryption age, {} {}",
        i.encryption.mode,
        i.encryption.recipients.join(" ")
    );
    for s in &i.sources {
        println!("source     {} ({})", s.name, s.kind);
    }
    if let Some(s) = manifest {
        println!(
            "manifest   {} files, {} (all checked)",
            s.files_checked,
            size(s.manifest.total_bytes)
        );
        for (src, rec) in s.manifest.sources.iter().zip(&s.sources.sources) {
            println!("  {}: {} — {}", src.name, rec.description, src.report.summary);
        }
    }
    Ok(())
}
